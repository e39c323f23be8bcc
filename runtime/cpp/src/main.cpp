// allinone_runner: transcribe a 16 kHz WAV with a bundle and time it, from native code.
//
//   allinone_runner BUNDLE AUDIO.wav [--lengths 1,5,10,20] [--runs N] [--threads T] [--out DIR]
//                   [--etdump FILE] [--transcribe-only] [--logprobs FILE.npy]
//                   [--greedy] [--hotwords FILE] [--beam N] [--lm-weight W] [--word-bonus B] [--oov-penalty P]
//   allinone_runner --device-info
//
// Prints the transcript on stdout (greedy, or beam search with the bundle's LM when it carries one: beam.h); with --out writes DIR/report.json (docs/formats.md, Latency report,
// runner "cpp"); with --etdump writes an ETDump of a few profiled calls (read it with ExecuTorch's Inspector); with
// --logprobs writes the log-probs of one call on the whole clip (zero-padded to the program's minimum) as .npy.
// --device-info prints the device record a report of this machine would carry (JSON: CPU, cores, ISA features).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <executorch/runtime/platform/runtime.h>

#include "beam.h"
#include "bench.h"
#include "bundle.h"
#include "ctc.h"
#include "device.h"
#include "model.h"
#include "npy.h"
#include "wav.h"

namespace {

constexpr int kExitBadInput = 2;
constexpr int kEtdumpRuns = 3;  // the first is the warm-up the Inspector-side summary drops

const char* kUsage =
    "usage: allinone_runner BUNDLE AUDIO.wav [--lengths 1,5,10,20] [--runs N] [--threads T] [--out DIR]\n"
    "                       [--etdump FILE] [--transcribe-only] [--logprobs FILE.npy]\n"
    "                       [--greedy] [--hotwords FILE] [--beam N] [--lm-weight W] [--word-bonus B] [--oov-penalty P]\n"
    "       allinone_runner --device-info   (print this machine's device record as a report carries it)\n";

struct Args {
  std::string bundle, audio, out, etdump, logprobs, hotwords;
  std::vector<double> lengths{1, 5, 10, 20};
  int runs = 10, threads = 0;
  bool transcribe_only = false, greedy = false;
  allinone::DecoderOverrides decoder;
};

double parse_number(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value)) {
    throw std::runtime_error(flag + ": expected a number, got '" + text + "'");
  }
  return value;
}

std::vector<double> parse_lengths(const std::string& text) {
  std::vector<double> lengths;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    double value = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(value > 0)) {
      throw std::runtime_error("--lengths: expected comma-separated seconds like 1,5,10,20, got '" + text + "'");
    }
    lengths.push_back(value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (lengths.empty()) throw std::runtime_error("--lengths: expected at least one length in seconds");
  return lengths;
}

int parse_positive(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 1 || value > 100000) {
    throw std::runtime_error(flag + ": expected a positive integer, got '" + text + "'");
  }
  return static_cast<int>(value);
}

Args parse_args(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + ": expected a value");
      return argv[++i];
    };
    if (a == "--lengths") args.lengths = parse_lengths(value());
    else if (a == "--runs") args.runs = parse_positive(a, value());
    else if (a == "--threads") args.threads = parse_positive(a, value());
    else if (a == "--out") args.out = value();
    else if (a == "--etdump") args.etdump = value();
    else if (a == "--transcribe-only") args.transcribe_only = true;
    else if (a == "--logprobs") args.logprobs = value();
    else if (a == "--greedy") args.greedy = true;
    else if (a == "--hotwords") args.hotwords = value();
    else if (a == "--beam") { args.decoder.beam = true; args.decoder.values.beam = parse_positive(a, value()); }
    else if (a == "--lm-weight") { args.decoder.lm_weight = true; args.decoder.values.lm_weight = parse_number(a, value()); }
    else if (a == "--word-bonus") { args.decoder.word_bonus = true; args.decoder.values.word_bonus = parse_number(a, value()); }
    else if (a == "--oov-penalty") { args.decoder.oov_penalty = true; args.decoder.values.oov_penalty = parse_number(a, value()); }
    else if (a == "-h" || a == "--help") { std::fputs(kUsage, stdout); std::exit(0); }
    else if (a == "--device-info") {
      std::printf("%s\n", allinone::device_json(allinone::device_info()).c_str());
      std::exit(0);
    }
    else if (!a.empty() && a[0] == '-') throw std::runtime_error(a + ": unknown option");
    else positional.push_back(a);
  }
  if (positional.size() != 2) throw std::runtime_error("expected BUNDLE and AUDIO.wav");
  args.bundle = positional[0];
  args.audio = positional[1];
  return args;
}

std::vector<float> read_checked_audio(const std::string& path, const allinone::Bundle& bundle) {
  allinone::WavAudio wav = allinone::read_wav(path);
  if (wav.sample_rate != bundle.sample_rate) {
    throw std::runtime_error(path + ": " + std::to_string(wav.sample_rate) + " Hz; this runner takes " +
                             std::to_string(bundle.sample_rate) + " Hz WAV (the Python runtime resamples)");
  }
  float peak = 0.0f;
  for (size_t i = 0; i < wav.samples.size(); ++i) {
    if (!std::isfinite(wav.samples[i])) {
      throw std::runtime_error(path + ": NaN or infinite samples (first at sample " + std::to_string(i) +
                               "); expected finite samples in [-1, 1]");
    }
    peak = std::max(peak, std::fabs(wav.samples[i]));
  }
  if (peak > 1.0f) {  // float WAV can hold anything; transcribed as given, like the Python runtime does
    std::fprintf(stderr, "allinone_runner: warning: %s: peak %.4g is beyond full scale; expected samples in [-1, 1]\n",
                 path.c_str(), peak);
  }
  return wav.samples;
}

int run(const Args& args) {
  executorch::runtime::runtime_init();
  allinone::Bundle bundle = allinone::open_bundle(args.bundle, ALLINONE_EXECUTORCH_VERSION);
  if (!bundle.compat_guaranteed) {
    std::fprintf(stderr, "warning: %s was built with executorch %s; this runner's %s is past the releases "
                 "guaranteed to read it\n", args.bundle.c_str(), bundle.executorch_built.c_str(),
                 ALLINONE_EXECUTORCH_VERSION);
  }
  std::vector<float> audio = read_checked_audio(args.audio, bundle);
  std::vector<allinone::Hotword> hotwords;
  if (!args.hotwords.empty()) hotwords = allinone::read_hotwords(args.hotwords);
  std::unique_ptr<allinone::BeamDecoder> decoder;
  if (!args.greedy) decoder = allinone::bundle_decoder(args.bundle, bundle.vocab, args.decoder, hotwords);
  if (decoder) {
    for (const auto& skipped : decoder->skipped_hotwords) {
      std::fprintf(stderr, "allinone_runner: warning: %s: hotword '%s' skipped: the model's units cannot spell '%s'\n",
                   args.hotwords.c_str(), skipped.first.c_str(), skipped.second.c_str());
    }
  }

  int64_t rss_before = allinone::current_rss_bytes();
  allinone::BenchOptions options;
  options.lengths_s = args.lengths;
  options.runs = args.runs;
  options.audio = args.audio;
  options.threads = allinone::set_threads(args.threads);
  allinone::Model model(bundle, /*etdump=*/false);
  auto transcribe = [&](const std::vector<float>& samples) -> std::string {
    if (!decoder) return model.transcribe(samples);
    allinone::LogProbs lp = model.log_probs(samples);
    return lp.frames ? decoder->decode(lp.values.data(), lp.frames, lp.vocab_size) : "";
  };
  if (!args.logprobs.empty()) {
    if (static_cast<int64_t>(audio.size()) >= bundle.max_samples + bundle.length_step) {
      throw std::runtime_error("--logprobs: " + args.audio + " is longer than one call of the program (" +
                               std::to_string(bundle.max_samples) + " samples); expected a shorter clip");
    }
    allinone::write_npy(args.logprobs, model.run(allinone::fit_input(bundle, audio)));
  }
  if (args.transcribe_only) {
    std::printf("%s\n", transcribe(audio).c_str());
    return 0;
  }
  allinone::Decoding decoding;  // the bench times the decoder transcripts come from
  if (decoder) {
    decoding.decoder = "ctc_prefix_beam";
    decoding.beam = decoder->beam();
    decoding.lm_bytes = decoder->lm_bytes;
    decoding.decode = [&](const allinone::LogProbs& lp) {
      return lp.frames ? decoder->decode(lp.values.data(), lp.frames, lp.vocab_size) : std::string();
    };
  } else {
    decoding.decode = [&](const allinone::LogProbs& lp) {
      return allinone::decode_greedy(allinone::best_symbols(lp.values.data(), lp.frames, lp.vocab_size), bundle.vocab);
    };
  }
  allinone::BenchResult result = allinone::run_bench(model, audio, options, bundle, decoding);
  int64_t peak_rss = allinone::peak_rss_bytes();  // before profiling, which adds its own buffers
  std::string transcript = transcribe(audio);
  if (!args.out.empty()) {
    std::filesystem::create_directories(args.out);
    std::string path = args.out + "/report.json";
    std::ofstream(path + ".tmp") << allinone::report_json(bundle, options, result, model.load_ms(), peak_rss,
                                                          rss_before, transcript, decoding);
    std::filesystem::rename(path + ".tmp", path);
    std::fprintf(stderr, "wrote %s\n", path.c_str());
  }
  if (!args.etdump.empty()) {
    allinone::Model profiled(bundle, /*etdump=*/true);  // separate: profiling must not slow the timed runs
    double reference = args.lengths[std::min<size_t>(1, args.lengths.size() - 1)];
    std::vector<float> input(static_cast<size_t>(std::llround(reference * bundle.sample_rate)));
    for (size_t i = 0; i < input.size(); ++i) input[i] = audio[i % audio.size()];
    for (int r = 0; r < kEtdumpRuns; ++r) profiled.run(input);
    profiled.write_etdump(args.etdump);
  }
  std::printf("%s\n", transcript.c_str());
  return 0;
}

}  // namespace

// The entry point, also exported from liballinone_runner.so, which a shipped folder's launcher loads only
// after checking every file's sha256 (launcher.cpp).
extern "C" __attribute__((visibility("default"))) int allinone_runner_main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& err) {
    std::fprintf(stderr, "allinone_runner: error: %s\n", err.what());
    return kExitBadInput;
  }
}

#ifndef ALLINONE_RUNNER_LIBRARY
int main(int argc, char** argv) { return allinone_runner_main(argc, argv); }
#endif
