#include "bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "device.h"
#include "json.h"

namespace allinone {

namespace {

double timed_ms(Model& model, const std::vector<float>& samples) {
  auto start = std::chrono::steady_clock::now();
  model.run(samples);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// (network ms, decoding ms) of one call: the program's forward, then the decoder on its log-probs.
std::pair<double, double> timed_call(Model& model, const std::vector<float>& samples, const Decoding& decoding) {
  auto start = std::chrono::steady_clock::now();
  LogProbs log_probs = model.run(samples);
  auto network = std::chrono::steady_clock::now();
  decoding.decode(log_probs);
  auto end = std::chrono::steady_clock::now();
  return {std::chrono::duration<double, std::milli>(network - start).count(),
          std::chrono::duration<double, std::milli>(end - network).count()};
}

// numpy.percentile's default (linear interpolation between closest ranks).
double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::string number(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, x);
  return buf;
}

// `source` repeated to round(length * rate) samples, like numpy.resize in the Python bench, then cut to the
// length one program call takes for that much audio (fit_input).
std::vector<float> input_of_length(const std::vector<float>& source, double length_s, const Bundle& bundle) {
  int64_t n = std::llround(length_s * bundle.sample_rate);
  if (n < bundle.min_samples || n >= bundle.max_samples + bundle.length_step) {
    throw std::runtime_error("--lengths: " + number(length_s, 3) + " s is outside the program's range (one call)");
  }
  std::vector<float> out(static_cast<size_t>(n));
  for (size_t i = 0; i < out.size(); ++i) out[i] = source[i % source.size()];
  return fit_input(bundle, std::move(out));
}

}  // namespace

BenchResult run_bench(Model& model, const std::vector<float>& source, const BenchOptions& options, const Bundle& bundle,
                      const Decoding& decoding) {
  std::vector<std::vector<float>> inputs;
  for (double length : options.lengths_s) inputs.push_back(input_of_length(source, length, bundle));
  BenchResult result;
  result.first_run_ms = timed_ms(model, inputs[0]);
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (k > 0) model.run(inputs[k]);  // warm-up at this length (the cold run was the first length's)
    std::vector<double> times, decode_times;
    for (int r = 0; r < options.runs; ++r) {
      auto [network, decode] = timed_call(model, inputs[k], decoding);
      times.push_back(network);
      decode_times.push_back(decode);
    }
    result.times_ms.push_back(times);
    result.decode_ms.push_back(decode_times);
    std::fprintf(stderr, "%s: %g s audio: network p50 %.1f ms, %s decoding p50 %.1f ms\n", bundle.subnet.c_str(),
                 options.lengths_s[k], percentile(times, 50), decoding.decoder.c_str(), percentile(decode_times, 50));
  }
  return result;
}

// One row per length: p50/p90/min/max/mean and the real-time factor of `times` (ms).
static std::string latency_rows(const std::vector<std::vector<double>>& times, const std::vector<double>& lengths_s,
                         const std::string& indent) {
  std::ostringstream j;
  for (size_t k = 0; k < times.size(); ++k) {
    const auto& t = times[k];
    double p50 = percentile(t, 50);
    double mean = std::accumulate(t.begin(), t.end(), 0.0) / static_cast<double>(t.size());
    j << (k ? ",\n" : "\n") << indent << "{\"audio_s\": " << number(lengths_s[k], 3)
      << ", \"p50_ms\": " << number(p50, 4) << ", \"p90_ms\": " << number(percentile(t, 90), 4)
      << ", \"min_ms\": " << number(*std::min_element(t.begin(), t.end()), 4)
      << ", \"max_ms\": " << number(*std::max_element(t.begin(), t.end()), 4) << ", \"mean_ms\": " << number(mean, 4)
      << ", \"rtf\": " << number(p50 / (lengths_s[k] * 1e3), 6) << "}";
  }
  return j.str();
}

std::string report_json(const Bundle& bundle, const BenchOptions& options, const BenchResult& result, double load_ms,
                        int64_t peak_rss, int64_t rss_before_load, const std::string& transcript,
                        const Decoding& decoding) {
  std::ostringstream j;
  j << "{\n  \"format_version\": 3,\n  \"kind\": \"allinone-latency-report\",\n  \"measured\": true,\n"
    << "  \"date\": " << json_quote(utc_now_iso8601()) << ",\n"
    << "  \"device\": " << device_json(device_info()) << ",\n  \"runner\": \"cpp\",\n"
    << "  \"bundle\": {\"path\": " << json_quote(bundle.path) << ", \"subnet\": " << json_quote(bundle.subnet)
    << ", \"weight_bits\": " << bundle.weight_bits << ", \"macs_per_second\": "
    << (bundle.has_macs ? number(bundle.macs_per_second, 0) : "null") << ", \"pte_bytes\": " << bundle.pte_bytes
    << ", \"pte_sha256\": " << json_quote(bundle.pte_sha256)
    << ", \"profile\": " << (bundle.profile.empty() ? "null" : json_quote(bundle.profile)) << "},\n"
    << "  \"threads\": " << options.threads << ",\n  \"runs\": " << options.runs << ",\n"
    << "  \"load_ms\": " << number(load_ms, 4) << ",\n  \"first_run_ms\": " << number(result.first_run_ms, 4) << ",\n"
    << "  \"latency\": [" << latency_rows(result.times_ms, options.lengths_s, "    ") << "\n  ],\n"
    << "  \"decoding\": {\"decoder\": " << json_quote(decoding.decoder) << ", \"beam\": "
    << (decoding.beam > 0 ? std::to_string(decoding.beam) : "null") << ", \"lm_bytes\": "
    << (decoding.lm_bytes > 0 ? std::to_string(decoding.lm_bytes) : "null") << ", \"latency\": ["
    << latency_rows(result.decode_ms, options.lengths_s, "    ") << "\n  ]},\n";
  j << "  \"peak_rss_bytes\": " << peak_rss << ",\n  \"rss_before_load_bytes\": " << rss_before_load << ",\n"
    << "  \"executorch\": " << json_quote(ALLINONE_EXECUTORCH_VERSION) << ",\n"
    << "  \"audio\": " << json_quote(options.audio) << ",\n"
    << "  \"transcript\": " << json_quote(transcript) << "\n}\n";
  return j.str();
}

}  // namespace allinone
