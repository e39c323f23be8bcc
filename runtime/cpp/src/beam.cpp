#include "beam.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "json.h"
#include "sha256.h"

namespace allinone {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr int kSpecial = 0, kSpace = 1, kWordStart = 2, kContinue = 3;
const std::string kWordStartMark = "\xE2\x96\x81";  // U+2581 in UTF-8

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

// ln(e^a + e^b), written as beam.py's _lse
double lse(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  if (a >= b) return a + std::log1p(std::exp(b - a));
  return b + std::log1p(std::exp(a - b));
}

bool spellable(const std::string& word, const std::vector<std::string>& pieces) {
  std::vector<bool> reach(word.size() + 1, false);
  reach[0] = true;
  for (size_t i = 0; i < word.size(); ++i) {
    if (!reach[i]) continue;
    for (const std::string& p : pieces) {
      if (!p.empty() && word.compare(i, p.size(), p) == 0 && i + p.size() <= word.size()) reach[i + p.size()] = true;
    }
  }
  return reach[word.size()];
}

std::vector<std::string> split_blanks(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
      if (!current.empty()) out.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n\f\v"), b = s.find_last_not_of(" \t\r\n\f\v");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace

std::vector<Hotword> read_hotwords(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path + ": no such hotwords file");
  std::vector<Hotword> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    Hotword hw;
    size_t sep = line.rfind(" :");
    if (sep != std::string::npos) {
      std::string tail = line.substr(sep + 2);
      char* end = nullptr;
      double boost = std::strtod(tail.c_str(), &end);
      if (tail.empty() || *end != '\0') fail(path + ":" + std::to_string(n) + ": expected 'PHRASE' or 'PHRASE :BOOST'");
      if (!std::isfinite(boost) || boost < 0) fail(path + ":" + std::to_string(n) + ": boost: expected a number >= 0");
      hw.boost = boost;
      line = trim(line.substr(0, sep));
    }
    for (char& c : line) if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    std::vector<std::string> words = split_blanks(line);
    for (size_t k = 0; k < words.size(); ++k) hw.phrase += (k ? " " : "") + words[k];
    if (!hw.phrase.empty()) out.push_back(hw);
  }
  return out;
}

BeamDecoder::BeamDecoder(const std::vector<std::string>& vocab, NgramLM lm, DecoderOptions options,
                         const std::vector<Hotword>& hotwords)
    : lm_(std::move(lm)), options_(options) {
  if (options_.beam < 1 || options_.beam > 1024) fail("decoder: beam: expected an integer 1 to 1024");
  if (!(options_.token_prune > 0)) fail("decoder: token_prune: expected > 0");
  std::vector<std::string> pieces;
  for (size_t k = 0; k < vocab.size(); ++k) {
    const std::string& s = vocab[k];
    if (k == 0 || (s.size() > 2 && s.front() == '<' && s.back() == '>')) {
      kinds_.push_back(kSpecial);
      texts_.push_back("");
    } else if (s == " ") {
      kinds_.push_back(kSpace);
      texts_.push_back("");
    } else if (s.compare(0, kWordStartMark.size(), kWordStartMark) == 0) {
      kinds_.push_back(kWordStart);
      texts_.push_back(s.substr(kWordStartMark.size()));
    } else {
      kinds_.push_back(kContinue);
      texts_.push_back(s);
    }
    if (!texts_.back().empty()) pieces.push_back(texts_.back());
  }
  const std::vector<std::string>& words = lm_.words();
  size_t unspellable = 0;
  std::string example;
  for (size_t w = 3; w < words.size(); ++w) {
    if (!spellable(words[w], pieces)) {
      if (unspellable++ == 0) example = words[w];
    }
  }
  if (unspellable) {
    fail(lm_.path + ": " + std::to_string(unspellable) + " of " + std::to_string(words.size() - 3) +
         " LM words cannot be spelled with the model's units (e.g. '" + example +
         "'); expected an LM built from text in the model's alphabet");
  }
  std::vector<Lexicon::Entry> entries;
  entries.reserve(words.size());
  for (size_t w = 3; w < words.size(); ++w) entries.push_back({words[w], static_cast<int>(w), 0.0});
  for (const Hotword& hw : hotwords) {
    std::vector<std::string> parts = split_blanks(hw.phrase);
    std::string bad;
    for (const std::string& word : parts) {
      if (spellable(word, pieces)) continue;
      for (unsigned char c : word) {
        bool known = false;
        for (const std::string& p : pieces) known = known || p.find(static_cast<char>(c)) != std::string::npos;
        if (!known && bad.find(static_cast<char>(c)) == std::string::npos) bad += static_cast<char>(c);
      }
      if (bad.empty()) bad = "(no spelling)";
    }
    if (!bad.empty()) {
      skipped_hotwords.emplace_back(hw.phrase, bad);
      continue;
    }
    for (const std::string& word : parts) entries.push_back({word, lm_.word_id(word), hw.boost});
  }
  lexicon_ = Lexicon(entries);
}

bool BeamDecoder::closed_score(const State& state, double* score_out, int* word_id_out) const {
  double score = state.score;
  int word_id = state.node >= 0 ? lexicon_.word_at(state.node) : -1;
  if (word_id < 0) {
    if (!options_.has_oov_penalty) return false;
    if (state.node >= 0) score += options_.oov_penalty;
    word_id = NgramLM::kUnk;
  } else {
    score += lexicon_.hot_word(state.node);
  }
  score += options_.lm_weight * lm_.score(state.context, word_id) + options_.word_bonus;
  *score_out = score;
  *word_id_out = word_id;
  return true;
}

bool BeamDecoder::close(const State& state, State* out) const {
  if (state.partial.empty()) {
    *out = state;
    return true;
  }
  double score;
  int word_id;
  if (!closed_score(state, &score, &word_id)) return false;
  State next;
  next.words = state.words;
  next.words.push_back(state.partial);
  next.node = 0;
  next.context = lm_.next_context(state.context, word_id);
  next.score = score;
  *out = std::move(next);
  return true;
}

bool BeamDecoder::step(const State& state, int unit, double* score_out, int* node_out) const {
  int kind = kinds_[unit];
  double score = state.score;
  int node = state.node;
  if (kind == kSpace || kind == kWordStart) {
    if (!state.partial.empty()) {
      int word_id;
      if (!closed_score(state, &score, &word_id)) return false;
      node = 0;
    }
    if (kind == kSpace || texts_[unit].empty()) {
      *score_out = score;
      *node_out = node;
      return true;
    }
  }
  int next = lexicon_.walk(node, texts_[unit]);  // append, as append() does
  if (next < 0 && node >= 0) {
    if (!options_.has_oov_penalty) return false;
    score += options_.oov_penalty;
  }
  *score_out = score;
  *node_out = next;
  return true;
}

bool BeamDecoder::append(const State& state, const std::string& text, State* out) const {
  int node = lexicon_.walk(state.node, text);
  double score = state.score;
  if (node < 0 && state.node >= 0) {
    if (!options_.has_oov_penalty) return false;
    score += options_.oov_penalty;
  }
  *out = state;
  out->partial += text;
  out->node = node;
  out->score = score;
  return true;
}

bool BeamDecoder::advance(const State& state, int unit, State* out) const {
  int kind = kinds_[unit];
  if (kind == kSpace) return close(state, out);
  State current = state;
  if (kind == kWordStart && !close(state, &current)) return false;
  if (texts_[unit].empty()) {
    *out = std::move(current);
    return true;
  }
  return append(current, texts_[unit], out);
}

double BeamDecoder::rank(double total, const State& state) const {
  return total + state.score + lexicon_.hot(state.node);
}

double BeamDecoder::final_score(double total, const State& state, State* closed) const {
  if (!close(state, closed)) return kNegInf;
  return total + closed->score + options_.lm_weight * lm_.score(closed->context, NgramLM::kEos);
}

std::string BeamDecoder::decode(const float* log_probs, size_t frames, size_t vocab_size) const {
  if (vocab_size != kinds_.size()) fail("decoder: log-probs have " + std::to_string(vocab_size) + " symbols, the vocabulary " +
                                        std::to_string(kinds_.size()));
  // The algorithm of beam.py step for step (see there, "Speed"): a prefix not in the beam is reached by one path
  // per frame, so it is ranked from its parent's state (step()) and built only if kept; prefixes in the beam are
  // updated in beam order, the order of the sums deciding their rounding exactly as in beam.py.
  using StatePtr = std::shared_ptr<const State>;
  struct Hyp {
    std::vector<int> key;
    double pb, pnb;
    StatePtr state;
    uint64_t hash;  // of key, to find a hypothesis' children in the beam without comparing keys
  };
  struct Entry {  // a prefix in the beam, this frame
    bool made = false;
    double pb = kNegInf, pnb = kNegInf;
    StatePtr state;
  };
  struct Fresh {  // a new prefix: beam[parent].key + unit
    double rank;
    size_t parent;
    int unit;
    double source;
  };
  constexpr uint64_t kHashBase = 1000003;
  State start;
  if (lm_.order() > 1) start.context = {NgramLM::kBos};
  std::vector<Hyp> beam{{{}, 0.0, kNegInf, std::make_shared<const State>(start), 0}};
  std::vector<double> row(vocab_size);
  std::vector<int> units;
  std::vector<Entry> entries;
  std::vector<Fresh> fresh;
  std::vector<std::vector<std::pair<int, size_t>>> children;  // per hypothesis: (unit, child's index in the beam)
  for (size_t t = 0; t < frames; ++t) {
    for (size_t v = 0; v < vocab_size; ++v) row[v] = static_cast<double>(log_probs[t * vocab_size + v]);
    double best = *std::max_element(row.begin(), row.end());
    double threshold = best - options_.token_prune;
    units.clear();
    for (size_t u = 1; u < vocab_size; ++u) {
      if (row[u] >= threshold && kinds_[u] != kSpecial) units.push_back(static_cast<int>(u));
    }
    double blank = row[0];
    const size_t n = beam.size();
    children.assign(n, {});
    for (size_t j = 0; j < n; ++j) {
      const std::vector<int>& child = beam[j].key;
      if (child.empty()) continue;
      for (size_t i = 0; i < n; ++i) {
        const std::vector<int>& parent = beam[i].key;
        if (parent.size() + 1 == child.size() && beam[i].hash * kHashBase + static_cast<uint64_t>(child.back() + 1) ==
            beam[j].hash && std::equal(parent.begin(), parent.end(), child.begin())) {
          children[i].emplace_back(child.back(), j);
        }
      }
    }
    entries.assign(n, Entry{});
    fresh.clear();
    for (size_t i = 0; i < n; ++i) {
      const Hyp& hyp = beam[i];
      double total = lse(hyp.pb, hyp.pnb);
      Entry& entry = entries[i];
      if (!entry.made) entry = Entry{true, kNegInf, kNegInf, hyp.state};
      entry.pb = lse(entry.pb, total + blank);
      int last = hyp.key.empty() ? -1 : hyp.key.back();
      for (int u : units) {
        double p = row[u];
        double source;
        if (u == last) {
          entry.pnb = lse(entry.pnb, hyp.pnb + p);
          source = hyp.pb + p;
        } else {
          source = total + p;
        }
        if (source == kNegInf) continue;
        size_t child = n;
        for (const auto& [unit, j] : children[i]) {
          if (unit == u) child = j;
        }
        if (child < n) {  // a prefix in the beam
          Entry& target = entries[child];
          if (!target.made) {
            State state;
            if (!advance(*hyp.state, u, &state)) continue;
            target = Entry{true, kNegInf, kNegInf, std::make_shared<const State>(std::move(state))};
          }
          target.pnb = lse(target.pnb, source);
          continue;
        }
        double score;
        int node;
        if (!step(*hyp.state, u, &score, &node)) continue;
        fresh.push_back(Fresh{source + score + lexicon_.hot(node), i, u, source});  // rank(), same order
      }
    }
    // rank every candidate: (-rank, prefix) ascending, the prefix compared as beam[parent].key + unit for new ones
    struct Candidate {
      double neg_rank;
      size_t index;  // < n: entries[index]; else fresh[index - n]
    };
    std::vector<Candidate> ranked;
    ranked.reserve(n + fresh.size());
    for (size_t i = 0; i < n; ++i) {
      if (entries[i].made) ranked.push_back({-rank(lse(entries[i].pb, entries[i].pnb), *entries[i].state), i});
    }
    for (size_t k = 0; k < fresh.size(); ++k) ranked.push_back({-fresh[k].rank, n + k});
    auto key_less = [&](size_t a, size_t b) {
      const std::vector<int>& ka = a < n ? beam[a].key : beam[fresh[a - n].parent].key;
      const std::vector<int>& kb = b < n ? beam[b].key : beam[fresh[b - n].parent].key;
      size_t la = ka.size() + (a < n ? 0 : 1), lb = kb.size() + (b < n ? 0 : 1);
      for (size_t k = 0; k < std::min(la, lb); ++k) {
        int xa = k < ka.size() ? ka[k] : fresh[a - n].unit, xb = k < kb.size() ? kb[k] : fresh[b - n].unit;
        if (xa != xb) return xa < xb;
      }
      return la < lb;
    };
    auto less = [&](const Candidate& a, const Candidate& b) {
      if (a.neg_rank != b.neg_rank) return a.neg_rank < b.neg_rank;
      return key_less(a.index, b.index);
    };
    size_t keep = std::min(ranked.size(), static_cast<size_t>(options_.beam));
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep), ranked.end(), less);
    std::vector<Hyp> kept;
    kept.reserve(keep);
    for (size_t k = 0; k < keep; ++k) {
      size_t index = ranked[k].index;
      if (index < n) {
        kept.push_back(Hyp{beam[index].key, entries[index].pb, entries[index].pnb, entries[index].state,
                           beam[index].hash});
      } else {
        const Fresh& f = fresh[index - n];
        const Hyp& parent = beam[f.parent];
        State state;
        advance(*parent.state, f.unit, &state);  // step() said it is kept
        std::vector<int> key = parent.key;
        key.push_back(f.unit);
        kept.push_back(Hyp{std::move(key), kNegInf, f.source, std::make_shared<const State>(std::move(state)),
                           parent.hash * kHashBase + static_cast<uint64_t>(f.unit + 1)});
      }
    }
    beam = std::move(kept);
  }
  double best_score = 0.0;
  const Hyp* best = nullptr;
  State best_closed;
  for (const Hyp& hyp : beam) {
    State closed;
    double score = -final_score(lse(hyp.pb, hyp.pnb), *hyp.state, &closed);
    if (best == nullptr || score < best_score || (score == best_score && hyp.key < best->key)) {
      best = &hyp;
      best_score = score;
      best_closed = *hyp.state;
    }
  }
  if (best == nullptr || best_score == std::numeric_limits<double>::infinity()) return "";
  std::string text;
  for (const std::string& w : best_closed.words) text += (text.empty() ? "" : " ") + w;
  if (!best_closed.partial.empty()) text += (text.empty() ? "" : " ") + best_closed.partial;
  return text;
}

std::unique_ptr<BeamDecoder> bundle_decoder(const std::string& bundle_dir, const std::vector<std::string>& vocab,
                                            const DecoderOverrides& overrides, const std::vector<Hotword>& hotwords) {
  const std::string where = bundle_dir + "/manifest.json";
  std::ifstream in(where);
  std::stringstream text;
  text << in.rdbuf();
  Json manifest = parse_json(text.str());
  const Json& block = manifest["decoder"];
  if (block.is_null()) {
    if (!hotwords.empty()) {
      fail(bundle_dir + ": --hotwords needs a bundle built with an LM (`allinone build --lm LM_DIR`); this one "
           "decodes greedily");
    }
    return nullptr;
  }
  if (block["type"].string != "ctc_prefix_beam") fail(where + ": decoder.type: expected 'ctc_prefix_beam'; this runner knows no other decoder");
  const Json& lm = block["lm"];
  if (!lm["dir"].is_string() || lm["files"].type != Json::Type::Array) {
    fail(where + ": decoder.lm: expected {dir, files: [{file, sha256, bytes}]}");
  }
  int64_t lm_bytes = 0;
  for (const Json& entry : lm["files"].array) {
    if (!entry["file"].is_string() || !entry["sha256"].is_string() || !entry["bytes"].is_number()) {
      fail(where + ": decoder.lm.files: expected entries {file, sha256, bytes}");
    }
    const std::string& name = entry["file"].string;
    if (name.empty() || name[0] == '/' || name.find("..") != std::string::npos) {
      fail(where + ": decoder.lm.files: '" + name + "' is outside the bundle");
    }
    const std::string path = bundle_dir + "/" + name;
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (!file) fail(path + ": missing; the manifest lists it as the decoder's LM");
    std::string expected = entry["sha256"].string;
    for (char& c : expected) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (static_cast<double>(file.tellg()) != entry["bytes"].number || sha256_file(path) != expected) {
      fail(path + ": its bytes or sha256 differ from the manifest's: the file is damaged or was replaced (rebuild "
           "the bundle)");
    }
    lm_bytes += static_cast<int64_t>(entry["bytes"].number);
  }
  const Json& d = block["defaults"];
  DecoderOptions options;
  if (!d["beam"].is_number() || !d["lm_weight"].is_number() || !d["word_bonus"].is_number() ||
      !d["token_prune"].is_number() || !(d["oov_penalty"].is_number() || d["oov_penalty"].is_null())) {
    fail(where + ": decoder.defaults: expected beam, lm_weight, word_bonus, oov_penalty, token_prune");
  }
  options.beam = static_cast<int>(d["beam"].number);
  options.lm_weight = d["lm_weight"].number;
  options.word_bonus = d["word_bonus"].number;
  options.has_oov_penalty = d["oov_penalty"].is_number();
  options.oov_penalty = d["oov_penalty"].number;
  options.token_prune = d["token_prune"].number;
  if (overrides.beam) options.beam = overrides.values.beam;
  if (overrides.lm_weight) options.lm_weight = overrides.values.lm_weight;
  if (overrides.word_bonus) options.word_bonus = overrides.values.word_bonus;
  if (overrides.oov_penalty) {
    options.has_oov_penalty = true;
    options.oov_penalty = overrides.values.oov_penalty;
  }
  auto decoder = std::make_unique<BeamDecoder>(vocab, NgramLM::load(bundle_dir + "/" + lm["dir"].string), options,
                                               hotwords);
  decoder->lm_bytes = lm_bytes;
  return decoder;
}

}  // namespace allinone
