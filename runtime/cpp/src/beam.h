// CTC prefix beam search with a lexicon, a word n-gram LM and hotwords: the algorithm of
// runtime/allinone_runtime/beam.py, step for step and with the same double arithmetic in the same order, so
// both runtimes return the same transcript for the same log-probs (see that file for the description).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lexicon.h"
#include "ngram.h"

namespace allinone {

struct DecoderOptions {
  int beam = 8;  // defaults as beam.py's DecoderOptions; a bundle's manifest always sets every value
  double lm_weight = 0.9;
  double word_bonus = 3.5;
  bool has_oov_penalty = true;  // false: a strict lexicon (words outside it are never output)
  double oov_penalty = -40.0;
  double token_prune = 10.0;
};

struct Hotword {
  std::string phrase;
  double boost = 1.5;
};

// One phrase per line, optional trailing " :BOOST", '#' comments; ASCII lower-casing (as beam.py).
std::vector<Hotword> read_hotwords(const std::string& path);

class BeamDecoder {
 public:
  BeamDecoder(const std::vector<std::string>& vocab, NgramLM lm, DecoderOptions options,
              const std::vector<Hotword>& hotwords);
  std::string decode(const float* log_probs, size_t frames, size_t vocab_size) const;
  int beam() const { return options_.beam; }
  int64_t lm_bytes = 0;  // the bundle's LM files (as its manifest lists them), for reports
  // (phrase, characters the units cannot spell) of each hotword left out
  std::vector<std::pair<std::string, std::string>> skipped_hotwords;

 private:
  struct State {
    std::vector<std::string> words;
    std::string partial;
    int node = 0;
    std::vector<int> context;
    double score = 0.0;
  };
  bool close(const State& state, State* out) const;
  // The score (and LM word id) of closing a non-empty partial word; false if the lexicon is strict and the word
  // is not in it. close() adds exactly this.
  bool closed_score(const State& state, double* score, int* word_id) const;
  // The score and trie node advance() would give, without building the state (its words); false where advance()
  // would drop it.
  bool step(const State& state, int unit, double* score, int* node) const;
  bool append(const State& state, const std::string& text, State* out) const;
  bool advance(const State& state, int unit, State* out) const;
  double rank(double total, const State& state) const;
  double final_score(double total, const State& state, State* closed) const;

  std::vector<int> kinds_;
  std::vector<std::string> texts_;
  NgramLM lm_;
  DecoderOptions options_;
  Lexicon lexicon_;
};

// The bundle's beam-search decoder (manifest `decoder` block, every LM file checked against its sha256), with
// `overrides` applied on top of the manifest's defaults; nullptr for a bundle without one.
struct DecoderOverrides {
  bool beam = false, lm_weight = false, word_bonus = false, oov_penalty = false;
  DecoderOptions values;
};
std::unique_ptr<BeamDecoder> bundle_decoder(const std::string& bundle_dir, const std::vector<std::string>& vocab,
                                            const DecoderOverrides& overrides, const std::vector<Hotword>& hotwords);

}  // namespace allinone
