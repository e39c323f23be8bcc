// A word n-gram LM directory (lm.json + lm.arpa from `allinone lm build`), read and scored exactly as
// runtime/allinone_runtime/ngram.py does: same checks (one line naming the file), same word ids (<unk> 0,
// <s> 1, </s> 2, then unigrams in file order), same double arithmetic (log10 values times kLn10), and the same
// sorted-array trie: unigrams indexed by word id; an n-gram of order n >= 2 is the key
// `index of its (n-1)-word prefix * words + last word id` in its order's sorted keys, with its ln probability
// and back-off weight at the same position (24 bytes per n-gram; hash maps of string keys took about 100).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace allinone {

constexpr double kLn10 = 2.302585092994046;  // the literal ngram.py uses

class NgramLM {
 public:
  static constexpr int kUnk = 0, kBos = 1, kEos = 2;

  // Checks lm.json (kind, format version 1, order) and the ARPA it names (bytes, sha256), then parses it.
  static NgramLM load(const std::string& directory);

  int order() const { return order_; }
  const std::vector<std::string>& words() const { return words_; }
  int word_id(const std::string& word) const;
  // ln p(word | context), backing off; `context` holds at most order-1 ids, oldest first.
  double score(const std::vector<int>& context, int word) const;
  std::vector<int> next_context(const std::vector<int>& context, int word) const;
  std::string path;

 private:
  struct Order {  // the n-grams of one order >= 2, sorted by key
    std::vector<uint64_t> keys;
    std::vector<double> prob, backoff;  // ln p; ln back-off weight (0.0 where none is written)
    int64_t find(uint64_t key) const;
  };
  // Position of ids[begin, end) in its order's arrays (the word id for one word), or -1 if not held.
  int64_t index(const std::vector<int>& ids, size_t begin, size_t end) const;
  uint64_t key(int64_t prefix, int word) const { return static_cast<uint64_t>(prefix) * words_.size() + word; }
  int order_ = 0;
  std::vector<std::string> words_;
  std::unordered_map<std::string, int> ids_;
  std::vector<double> unigram_prob_, unigram_backoff_;
  std::vector<Order> higher_;  // orders 2..order_
};

}  // namespace allinone
