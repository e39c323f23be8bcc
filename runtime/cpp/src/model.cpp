#include "model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include <executorch/devtools/etdump/etdump_flatcc.h>
#include <executorch/extension/tensor/tensor.h>

#include "ctc.h"

// The wheel ships libexecutorch_threadpool.so but not its header (extension/threadpool/threadpool.h, which
// also needs pthreadpool.h, not shipped either). These are the two functions the runner calls, declared as
// that header declares them; member functions are resolved by their mangled names only.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace allinone {

namespace {

using executorch::extension::Module;

constexpr float kSilencePeak = 0.001f;  // -60 dBFS, as allinone_runtime.transcribe.SILENCE_PEAK

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

}  // namespace

size_t set_threads(int threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 1;
  if (threads > 0) pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));
  return pool->get_thread_count();
}

Model::Model(const Bundle& bundle, bool etdump) : bundle_(bundle) {
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<executorch::runtime::EventTracer> tracer;
  if (etdump) tracer = std::make_unique<executorch::etdump::ETDumpGen>();
  module_ = std::make_unique<Module>(bundle.pte_path, Module::LoadMode::File, std::move(tracer));
  auto error = module_->load_method("forward");
  if (error != executorch::runtime::Error::Ok) {
    char code[16];
    std::snprintf(code, sizeof(code), "0x%x", static_cast<unsigned>(error));
    fail(bundle.pte_path + ": ExecuTorch could not load the program's forward method (error " + code + ")");
  }
  load_ms_ = ms_since(start);
}

LogProbs Model::run(const std::vector<float>& samples) {
  // from_blob wraps the caller's samples without a copy; the program only reads its input.
  auto input = executorch::extension::from_blob(const_cast<float*>(samples.data()),
                                                {1, static_cast<executorch::aten::SizesType>(samples.size())},
                                                executorch::aten::ScalarType::Float);
  auto result = module_->forward(input);
  if (!result.ok()) fail(bundle_.pte_path + ": forward failed on " + std::to_string(samples.size()) + " samples");
  const auto& out = result.get()[0].toTensor();  // (1, T, V)
  LogProbs lp;
  lp.frames = static_cast<size_t>(out.size(1));
  lp.vocab_size = static_cast<size_t>(out.size(2));
  const float* data = out.const_data_ptr<float>();
  lp.values.assign(data, data + lp.frames * lp.vocab_size);
  return lp;
}

std::string Model::transcribe(const std::vector<float>& samples, double overlap_s) {
  LogProbs lp = log_probs(samples, overlap_s);
  if (lp.frames == 0) return "";
  return decode_greedy(best_symbols(lp.values.data(), lp.frames, lp.vocab_size), bundle_.vocab);
}

LogProbs Model::log_probs(const std::vector<float>& samples, double overlap_s) {
  LogProbs merged;
  float peak = 0.0f;
  for (float s : samples) peak = std::max(peak, std::fabs(s));
  if (peak < kSilencePeak) return merged;
  // Windows of max_samples every `hop`, overlap rounded to whole frames; each window keeps its frames up to
  // the middle of its overlap with the next (see allinone_runtime/transcribe.py).
  const int64_t frame = std::llround(bundle_.frame_shift_s * bundle_.sample_rate);
  const int64_t overlap = std::llround(overlap_s * bundle_.sample_rate / frame) * frame;
  const int64_t hop = (bundle_.max_samples - overlap) / frame * frame;
  const int64_t n = static_cast<int64_t>(samples.size());
  std::vector<int64_t> starts{0};
  while (starts.back() + bundle_.max_samples < n) starts.push_back(starts.back() + hop);
  for (size_t k = 0; k < starts.size(); ++k) {
    int64_t end = std::min(n, starts[k] + bundle_.max_samples);
    LogProbs lp = run(fit_input(bundle_, std::vector<float>(samples.begin() + starts[k], samples.begin() + end)));
    size_t first = k == 0 ? 0 : static_cast<size_t>(overlap / 2 / frame);
    size_t last = k + 1 == starts.size() ? lp.frames : static_cast<size_t>((hop + overlap / 2) / frame);
    last = std::min(last, lp.frames);
    first = std::min(first, last);
    merged.vocab_size = lp.vocab_size;
    merged.values.insert(merged.values.end(), lp.values.begin() + first * lp.vocab_size,
                         lp.values.begin() + last * lp.vocab_size);
    merged.frames += last - first;
  }
  return merged;
}

void Model::write_etdump(const std::string& path) {
  auto* tracer = static_cast<executorch::etdump::ETDumpGen*>(module_->event_tracer());
  if (tracer == nullptr) fail("no ETDump was recorded (load the model with ETDump enabled)");
  executorch::etdump::ETDumpResult result = tracer->get_etdump_data();
  if (result.buf == nullptr) fail("the ETDump is empty");
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::free(result.buf);
    fail(path + ": cannot write the ETDump");
  }
  std::fwrite(result.buf, 1, result.size, f);
  std::fclose(f);
  std::free(result.buf);
}

}  // namespace allinone
