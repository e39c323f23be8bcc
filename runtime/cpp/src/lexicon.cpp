#include "lexicon.h"

#include <algorithm>
#include <numeric>

namespace allinone {

Lexicon::Lexicon(const std::vector<Entry>& entries) {
  // The entries' words sorted by bytes, without copying them; of equal words the later entry wins (a hotword
  // that is also an LM word has the same id), as Python's dict assignment does.
  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return entries[a].word < entries[b].word; });
  std::vector<const std::string*> words;
  std::vector<int> word_ids;
  for (size_t k : order) {
    if (!words.empty() && *words.back() == entries[k].word) {
      word_ids.back() = entries[k].word_id;
      continue;
    }
    words.push_back(&entries[k].word);
    word_ids.push_back(entries[k].word_id);
  }
  first_.push_back(0);
  count_.push_back(0);
  label_.push_back(0);
  word_at_.push_back(-1);
  // Breadth first: depth d's nodes are the distinct d-byte prefixes, met in sorted order (prefixes of sorted
  // words are sorted), so the children of each node are made one after another, sorted by byte.
  std::vector<int> at(words.size(), 0);  // per word: the node of its prefix so far
  std::vector<size_t> alive;
  for (size_t k = 0; k < words.size(); ++k) {
    if (!words[k]->empty()) alive.push_back(k);
  }
  for (size_t depth = 0; !alive.empty(); ++depth) {
    std::vector<size_t> longer;
    int last_parent = -1, last_byte = -1, node = 0;
    for (size_t k : alive) {
      const std::string& w = *words[k];
      int parent = at[k], byte = static_cast<unsigned char>(w[depth]);
      if (parent != last_parent || byte != last_byte) {
        last_parent = parent;
        last_byte = byte;
        node = static_cast<int>(label_.size());
        if (count_[parent] == 0) first_[parent] = node;
        ++count_[parent];
        first_.push_back(0);
        count_.push_back(0);
        label_.push_back(static_cast<uint8_t>(byte));
        word_at_.push_back(-1);
      }
      at[k] = node;
      if (w.size() == depth + 1) {
        word_at_[node] = word_ids[k];
      } else {
        longer.push_back(k);
      }
    }
    alive.swap(longer);
  }
  // push_back left up to 2x spare capacity; the trie lives as long as the decoder
  first_.shrink_to_fit();
  count_.shrink_to_fit();
  label_.shrink_to_fit();
  word_at_.shrink_to_fit();
  // hotwords: boost * bytes walked on each node of the path, boost * length at the word's end (the best)
  for (const Entry& e : entries) {
    if (e.boost == 0.0) continue;
    int node = 0;
    for (size_t depth = 1; depth <= e.word.size(); ++depth) {
      node = child(node, static_cast<unsigned char>(e.word[depth - 1]));
      hot_[node] = std::max(hot(node), e.boost * static_cast<double>(depth));
    }
    hot_word_[node] = std::max(hot_word(node), e.boost * static_cast<double>(e.word.size()));
  }
}

int Lexicon::child(int node, unsigned char byte) const {
  auto lo = label_.begin() + first_[node], hi = lo + count_[node];
  auto it = std::lower_bound(lo, hi, byte);
  return it != hi && *it == byte ? static_cast<int>(it - label_.begin()) : -1;
}

int Lexicon::walk(int node, const std::string& text) const {
  for (unsigned char byte : text) {
    if (node < 0) return -1;
    node = child(node, byte);
  }
  return node;
}

double Lexicon::hot(int node) const {
  if (hot_.empty()) return 0.0;  // no hotwords: the decoder's inner loop skips the hash
  auto it = hot_.find(node);
  return it == hot_.end() ? 0.0 : it->second;
}

double Lexicon::hot_word(int node) const {
  auto it = hot_word_.find(node);
  return it == hot_word_.end() ? 0.0 : it->second;
}

}  // namespace allinone
