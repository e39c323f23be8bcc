#include "ngram.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "json.h"
#include "sha256.h"

namespace allinone {

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t at = text.find(sep, start);
    parts.push_back(text.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n\f\v"), b = s.find_last_not_of(" \t\r\n\f\v");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool parse_double(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(text.c_str(), &end);
  return *end == '\0';
}

// The lines of ARPA text one at a time: a vector of every line would cost several times the file.
struct Lines {  // a read position in the file's text; copied to look ahead, so it holds no strings itself
  const std::string* data;
  const std::string* file;
  size_t pos = 0, number = 0;
  Lines(const std::string& text, const std::string& path) : data(&text), file(&path) {}
  bool next(std::string* line) {
    if (pos >= data->size()) return false;
    size_t end = data->find('\n', pos);
    if (end == std::string::npos) end = data->size();
    line->assign(*data, pos, end - pos);
    pos = end + 1;
    ++number;
    return true;
  }
  void skip_blank() {
    std::string line;
    while (true) {
      Lines before = *this;
      if (!next(&line)) return;
      if (!trim(line).empty()) {
        *this = before;
        return;
      }
    }
  }
  std::string where() const { return *file + ":" + std::to_string(number); }
};

}  // namespace

int64_t NgramLM::Order::find(uint64_t key) const {
  auto it = std::lower_bound(keys.begin(), keys.end(), key);
  return it != keys.end() && *it == key ? it - keys.begin() : -1;
}

int64_t NgramLM::index(const std::vector<int>& ids, size_t begin, size_t end) const {
  int64_t at = ids[begin];
  for (size_t i = begin + 1; i < end && at >= 0; ++i) at = higher_[i - begin - 1].find(key(at, ids[i]));
  return at;
}

int NgramLM::word_id(const std::string& word) const {
  auto it = ids_.find(word);
  return it == ids_.end() ? kUnk : it->second;
}

double NgramLM::score(const std::vector<int>& context, int word) const {
  double total = 0.0;
  size_t first = context.size() + 1 > static_cast<size_t>(order_) ? context.size() + 1 - order_ : 0;
  for (size_t start = first; start < context.size(); ++start) {
    int64_t h = index(context, start, context.size());
    if (h < 0) continue;  // an unseen history has no n-grams and no back-off weight (ln 1 = 0)
    size_t length = context.size() - start;
    const Order& level = higher_[length - 1];
    int64_t p = level.find(key(h, word));
    if (p >= 0) return total + level.prob[p];
    total += length == 1 ? unigram_backoff_[h] : higher_[length - 2].backoff[h];
  }
  return total + unigram_prob_[word];
}

std::vector<int> NgramLM::next_context(const std::vector<int>& context, int word) const {
  std::vector<int> next = context;
  next.push_back(word);
  size_t keep = static_cast<size_t>(order_ - 1);
  if (next.size() > keep) next.erase(next.begin(), next.end() - static_cast<std::ptrdiff_t>(keep));
  return next;
}

NgramLM NgramLM::load(const std::string& directory) {
  const std::string meta_path = directory + "/lm.json";
  std::ifstream meta_in(meta_path);
  if (!meta_in) fail(meta_path + ": missing; an LM directory is lm.json + lm.arpa");
  std::stringstream meta_text;
  meta_text << meta_in.rdbuf();
  Json meta;
  try {
    meta = parse_json(meta_text.str());
  } catch (const std::exception&) {
    fail(meta_path + ": not JSON; expected an allinone LM description");
  }
  if (meta["kind"].string != "allinone-lm") fail(meta_path + ": kind: expected 'allinone-lm'; not an allinone LM description");
  if (!meta["format_version"].is_number() || meta["format_version"].number != 1) {
    fail(meta_path + ": format_version: expected 1; this runner reads LM format 1");
  }
  const Json& arpa_info = meta["arpa"];
  const Json& order = meta["order"];
  if (!arpa_info["file"].is_string() || !arpa_info["sha256"].is_string() || !arpa_info["bytes"].is_number() ||
      !order.is_number() || order.number < 1 || order.number > 6) {
    fail(meta_path + ": expected order (1-6) and arpa {file, sha256, bytes}");
  }
  const std::string name = arpa_info["file"].string;
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    fail(meta_path + ": arpa.file: expected a file name inside the LM directory");
  }
  const std::string arpa_path = directory + "/" + name;
  std::ifstream in(arpa_path, std::ios::binary);
  if (!in) fail(arpa_path + ": missing; lm.json names it as the LM");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || static_cast<double>(size) != arpa_info["bytes"].number) {
    fail(arpa_path + ": " + (size < 0 ? std::string("not a regular file") : std::to_string(size) + " bytes") +
         ", lm.json records " + std::to_string(static_cast<long long>(arpa_info["bytes"].number)) +
         "; the file is truncated or was replaced (rebuild it with `allinone lm build`)");
  }
  std::string data(static_cast<size_t>(size), '\0');  // read once, no stream buffer copy
  in.seekg(0, std::ios::beg);
  if (!in.read(data.data(), size)) fail(arpa_path + ": could not be read");
  std::string expected = arpa_info["sha256"].string;
  for (char& c : expected) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (sha256_file(arpa_path) != expected) {
    fail(arpa_path + ": sha256 differs from lm.json's; the file is damaged or was replaced (rebuild it with "
         "`allinone lm build`)");
  }

  NgramLM lm;
  lm.path = arpa_path;
  lm.order_ = static_cast<int>(order.number);
  Lines lines{data, arpa_path};
  std::string line;
  lines.skip_blank();
  if (!lines.next(&line) || trim(line) != "\\data\\") fail(arpa_path + ": expected an ARPA language model starting with \\data\\");
  std::vector<long> declared;
  while (true) {
    Lines before = lines;
    if (!lines.next(&line) || line.compare(0, 6, "ngram ") != 0) {
      lines = before;
      break;
    }
    std::vector<std::string> parts = split(line.substr(6), '=');
    char* end1 = nullptr;
    char* end2 = nullptr;
    long n = parts.size() == 2 ? std::strtol(parts[0].c_str(), &end1, 10) : -1;
    long count = parts.size() == 2 ? std::strtol(parts[1].c_str(), &end2, 10) : -1;
    if (parts.size() != 2 || *end1 != '\0' || *end2 != '\0' || count < 0 ||
        n != static_cast<long>(declared.size()) + 1) {
      fail(lines.where() + ": expected 'ngram N=COUNT'");
    }
    declared.push_back(count);
  }
  if (static_cast<int>(declared.size()) != lm.order_) {
    fail(arpa_path + ": " + std::to_string(declared.size()) + " orders declared, lm.json says " +
         std::to_string(lm.order_));
  }
  lm.words_ = {"<unk>", "<s>", "</s>"};
  for (int k = 0; k < 3; ++k) lm.ids_[lm.words_[k]] = k;
  std::vector<double> uni_prob(3), uni_backoff(3, 0.0);
  std::vector<bool> has_unigram(3, false);
  for (int n = 1; n <= lm.order_; ++n) {
    lines.skip_blank();
    if (!lines.next(&line) || trim(line) != "\\" + std::to_string(n) + "-grams:") {
      fail(lines.where() + ": expected \\" + std::to_string(n) + "-grams: (a truncated or damaged ARPA file)");
    }
    std::vector<uint64_t> keys;
    std::vector<double> prob, backoff;
    for (long c = 0; c < declared[n - 1]; ++c) {
      bool got = lines.next(&line);
      std::vector<std::string> fields = got ? split(line, '\t') : std::vector<std::string>{};
      std::vector<std::string> gram = fields.size() >= 2 ? split(fields[1], ' ') : std::vector<std::string>{};
      if ((fields.size() != 2 && fields.size() != 3) || static_cast<int>(gram.size()) != n) {
        fail(lines.where() + ": expected 'LOG10PROB<TAB>" + std::to_string(n) +
             " words[<TAB>BACKOFF]' (a truncated or damaged ARPA file)");
      }
      double p = 0.0, b = 0.0;
      if (!parse_double(fields[0], &p) || (fields.size() == 3 && !parse_double(fields[2], &b))) {
        fail(lines.where() + ": expected numbers");
      }
      p *= kLn10;
      b = fields.size() == 3 ? b * kLn10 : 0.0;
      if (n == 1) {
        auto it = lm.ids_.find(gram[0]);
        if (it == lm.ids_.end()) {
          it = lm.ids_.emplace(gram[0], static_cast<int>(lm.words_.size())).first;
          lm.words_.push_back(gram[0]);
          uni_prob.push_back(0.0);
          uni_backoff.push_back(0.0);
          has_unigram.push_back(false);
        }
        if (has_unigram[it->second]) {
          fail(lines.where() + ": the unigram '" + gram[0] + "' is written twice; expected each n-gram once");
        }
        uni_prob[it->second] = p;
        uni_backoff[it->second] = b;
        has_unigram[it->second] = true;
        continue;
      }
      std::vector<int> ids;
      for (const std::string& w : gram) {
        auto it = lm.ids_.find(w);
        if (it == lm.ids_.end()) fail(lines.where() + ": a word that is not a unigram of the model");
        ids.push_back(it->second);
      }
      int64_t prefix = lm.index(ids, 0, ids.size() - 1);
      if (prefix < 0) {
        fail(lines.where() + ": the " + std::to_string(n) + "-gram's first " + std::to_string(n - 1) +
             " words are not an n-gram of the model; expected an ARPA file closed under prefixes");
      }
      keys.push_back(lm.key(prefix, ids.back()));
      prob.push_back(p);
      if (n < lm.order_) backoff.push_back(b);  // the top order's n-grams are never histories
    }
    if (n == 1) continue;
    std::vector<size_t> by_key(keys.size());
    for (size_t k = 0; k < by_key.size(); ++k) by_key[k] = k;
    std::stable_sort(by_key.begin(), by_key.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    Order level;
    level.keys.reserve(keys.size());
    level.prob.reserve(keys.size());
    level.backoff.reserve(backoff.size());
    for (size_t k : by_key) {
      if (!level.keys.empty() && level.keys.back() == keys[k]) {
        fail(arpa_path + ": a " + std::to_string(n) + "-gram is written twice; expected each n-gram once");
      }
      level.keys.push_back(keys[k]);
      level.prob.push_back(prob[k]);
      if (!backoff.empty()) level.backoff.push_back(backoff[k]);
    }
    lm.higher_.push_back(std::move(level));
  }
  lines.skip_blank();
  if (!lines.next(&line) || trim(line) != "\\end\\") fail(arpa_path + ": missing \\end\\ (a truncated or damaged ARPA file)");
  if (!has_unigram[kUnk]) {
    fail(arpa_path + ": no <unk> unigram; expected a model with an open vocabulary (as `allinone lm build` writes)");
  }
  // a word without a unigram line (only <s> or </s> can be one) scores as <unk>, as a back-off to nothing would
  for (size_t w = 0; w < uni_prob.size(); ++w) {
    if (!has_unigram[w]) uni_prob[w] = uni_prob[kUnk];
  }
  lm.unigram_prob_ = std::move(uni_prob);
  lm.unigram_backoff_ = std::move(uni_backoff);
  return lm;
}

}  // namespace allinone
