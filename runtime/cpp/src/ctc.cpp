#include "ctc.h"

namespace allinone {

std::vector<int> best_symbols(const float* log_probs, size_t frames, size_t vocab_size) {
  std::vector<int> ids(frames);
  for (size_t t = 0; t < frames; ++t) {
    const float* row = log_probs + t * vocab_size;
    size_t best = 0;
    for (size_t v = 1; v < vocab_size; ++v) {
      if (row[v] > row[best]) best = v;
    }
    ids[t] = static_cast<int>(best);
  }
  return ids;
}

std::string decode_greedy(const std::vector<int>& ids, const std::vector<std::string>& vocab) {
  // sentencepiece's word-start mark U+2581 in UTF-8: a piece that starts with it begins a new word.
  static const std::string kWordStart = "\xE2\x96\x81";
  std::string text;
  int prev = -1;
  for (int id : ids) {
    if (id != prev && id != 0) {
      std::string symbol = vocab[static_cast<size_t>(id)];
      bool special = symbol.size() > 2 && symbol.front() == '<' && symbol.back() == '>';
      if (special) {
        // a special token (an imported model's <s>, <unk>...) prints nothing
      } else if (symbol == " ") {
        if (!text.empty() && text.back() != ' ') text += ' ';
      } else {
        if (symbol.compare(0, kWordStart.size(), kWordStart) == 0) {
          if (!text.empty() && text.back() != ' ') text += ' ';
          symbol.erase(0, kWordStart.size());
        }
        text += symbol;
      }
    }
    prev = id;
  }
  if (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace allinone
