// Log-probs as a NumPy .npy file (float32, C order), so a test or benchmark can compare the native runner's
// raw output with the Python runtime's without parsing text.
#pragma once

#include <string>

#include "model.h"

namespace allinone {

// Writes `lp` as an array of shape (1, frames, vocab_size); throws std::runtime_error if it cannot.
void write_npy(const std::string& path, const LogProbs& lp);

}  // namespace allinone
