// Greedy CTC decoding, the same rule as the Python runtime: best symbol per frame (first on ties), collapse
// repeats, drop the blank (index 0), words separated by single spaces (a " " symbol, or a subword piece
// starting with U+2581, sentencepiece's word-start mark).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace allinone {

// Best symbol of each of `frames` rows of `vocab_size` log-probs.
std::vector<int> best_symbols(const float* log_probs, size_t frames, size_t vocab_size);

std::string decode_greedy(const std::vector<int>& ids, const std::vector<std::string>& vocab);

}  // namespace allinone
