// A bundle directory (model.pte + manifest.json), checked as the Python runtime checks it: format version,
// kind, the keys the runner reads, sha256 of model.pte, and the ExecuTorch compatibility rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace allinone {

struct Bundle {
  std::string path, pte_path, pte_sha256, subnet, profile, executorch_built;
  std::vector<std::string> vocab;  // index 0 is the CTC blank
  int sample_rate = 0;
  int64_t min_samples = 0, max_samples = 0, pte_bytes = 0;
  int64_t length_step = 1;  // the program takes min_samples + k * length_step samples (bundle format 1: any)
  double frame_shift_s = 0.0;
  int weight_bits = 0;
  bool has_macs = false;
  double macs_per_second = 0.0;
  bool compat_guaranteed = true;
};

// Throws std::runtime_error with one line naming the file and what was expected.
Bundle open_bundle(const std::string& directory, const std::string& installed_executorch);

// `samples` as one program call takes them: zero-padded to min_samples, or cut to the longest
// min_samples + k * length_step not over their length (the cut tail, under one output frame, is audio the
// network never reads). Throws when that is still over max_samples.
std::vector<float> fit_input(const Bundle& bundle, std::vector<float> samples);

}  // namespace allinone
