// The beam-search decoder's lexicon: a byte trie of the LM's words and the hotwords in flat arrays, built as
// runtime/allinone_runtime/lexicon.py builds it. Nodes are numbered breadth first from the root (0), so a
// node's children are consecutive and sorted by the byte leading to them; a step is a binary search among
// them. 11 bytes a node (a map of children per node took about 100); hotword bonuses only on hotword paths.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace allinone {

class Lexicon {
 public:
  struct Entry {
    std::string word;
    int word_id;  // LM word id (<unk>'s for a hotword the LM does not know)
    double boost;  // hotword boost per byte; 0 for a plain LM word
  };
  explicit Lexicon(const std::vector<Entry>& entries);
  Lexicon() : Lexicon(std::vector<Entry>{}) {}  // the root alone

  // The node reached from `node` by `text`'s bytes; -1 once it leaves the trie (or from -1).
  int walk(int node, const std::string& text) const;
  int word_at(int node) const { return word_at_[node]; }  // LM word id of the word ending at node; -1: none
  double hot(int node) const;  // boost * bytes walked on a hotword's path; 0 elsewhere (and at -1)
  double hot_word(int node) const;  // boost * length at a hotword's end
  size_t size() const { return label_.size(); }

 private:
  int child(int node, unsigned char byte) const;

  std::vector<int32_t> first_;  // first child
  std::vector<uint16_t> count_;  // number of children (at most 256)
  std::vector<uint8_t> label_;  // the byte leading to the node
  std::vector<int32_t> word_at_;
  std::unordered_map<int, double> hot_, hot_word_;
};

}  // namespace allinone
