// A bundle's program loaded with ExecuTorch's Module API; runs `forward` on mono 16 kHz samples and
// transcribes with the same padding, chunking, silence and decoding rules as the Python runtime.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>

#include "bundle.h"

namespace allinone {

struct LogProbs {
  size_t frames = 0, vocab_size = 0;
  std::vector<float> values;  // (frames, vocab_size), row-major
};

class Model {
 public:
  // Loads the program and initialises `forward`; `etdump` attaches ExecuTorch's ETDump event tracer.
  Model(const Bundle& bundle, bool etdump);
  double load_ms() const { return load_ms_; }
  LogProbs run(const std::vector<float>& samples);
  // Greedy transcript: silence (peak below -60 dBFS) -> "", short audio zero-padded, long audio chunked.
  std::string transcribe(const std::vector<float>& samples, double overlap_s = 4.0);
  // Log-probs of the whole clip on one frame grid (short audio zero-padded, long audio windowed and merged at
  // the middle of each overlap, as transcribe does); no frames for silence.
  LogProbs log_probs(const std::vector<float>& samples, double overlap_s = 4.0);
  // Writes the ETDump collected so far (only with `etdump`).
  void write_etdump(const std::string& path);

 private:
  const Bundle& bundle_;
  std::unique_ptr<executorch::extension::Module> module_;
  double load_ms_ = 0.0;
};

// Sizes ExecuTorch's shared thread pool (used by XNNPACK and the optimized kernels); returns the size in use.
size_t set_threads(int threads);

}  // namespace allinone
