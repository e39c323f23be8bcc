// A word n-gram LM directory (lm.json + lm.arpa from `allinone lm build`), read and scored exactly as
// runtime/allinone_runtime/ngram.py does: same checks (one line naming the file), same word ids (<unk> 0,
// <s> 1, </s> 2, then unigrams in file order), same double arithmetic (log10 values times kLn10).
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
  static std::string key(const std::vector<int>& ids, size_t begin, size_t end, int last);
  int order_ = 0;
  std::vector<std::string> words_;
  std::unordered_map<std::string, int> ids_;
  std::unordered_map<std::string, double> prob_, backoff_;
};

}  // namespace allinone
