#include "ngram.h"

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

}  // namespace

std::string NgramLM::key(const std::vector<int>& ids, size_t begin, size_t end, int last) {
  std::string k;
  for (size_t i = begin; i < end; ++i) k.append(reinterpret_cast<const char*>(&ids[i]), sizeof(int));
  if (last >= 0) k.append(reinterpret_cast<const char*>(&last), sizeof(int));
  return k;
}

int NgramLM::word_id(const std::string& word) const {
  auto it = ids_.find(word);
  return it == ids_.end() ? kUnk : it->second;
}

double NgramLM::score(const std::vector<int>& context, int word) const {
  double total = 0.0;
  for (size_t start = 0; start <= context.size(); ++start) {
    auto p = prob_.find(key(context, start, context.size(), word));
    if (p != prob_.end()) return total + p->second;
    auto b = backoff_.find(key(context, start, context.size(), -1));
    total += b == backoff_.end() ? 0.0 : b->second;
  }
  return total + prob_.at(key({}, 0, 0, kUnk));
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
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string data = buffer.str();
  if (static_cast<double>(data.size()) != arpa_info["bytes"].number) {
    fail(arpa_path + ": " + std::to_string(data.size()) + " bytes, lm.json records " +
         std::to_string(static_cast<long long>(arpa_info["bytes"].number)) +
         "; the file is truncated or was replaced (rebuild it with `allinone lm build`)");
  }
  std::string expected = arpa_info["sha256"].string;
  for (char& c : expected) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (sha256_file(arpa_path) != expected) {
    fail(arpa_path + ": sha256 differs from lm.json's; the file is damaged or was replaced (rebuild it with "
         "`allinone lm build`)");
  }

  NgramLM lm;
  lm.path = arpa_path;
  lm.order_ = static_cast<int>(order.number);
  std::vector<std::string> lines = split(data, '\n');
  size_t i = 0;
  auto where = [&](size_t line) { return arpa_path + ":" + std::to_string(line + 1); };
  while (i < lines.size() && trim(lines[i]).empty()) ++i;
  if (i == lines.size() || trim(lines[i]) != "\\data\\") fail(arpa_path + ": expected an ARPA language model starting with \\data\\");
  ++i;
  std::vector<long> declared;
  while (i < lines.size() && lines[i].compare(0, 6, "ngram ") == 0) {
    std::vector<std::string> parts = split(lines[i].substr(6), '=');
    char* end1 = nullptr;
    char* end2 = nullptr;
    long n = parts.size() == 2 ? std::strtol(parts[0].c_str(), &end1, 10) : -1;
    long count = parts.size() == 2 ? std::strtol(parts[1].c_str(), &end2, 10) : -1;
    if (parts.size() != 2 || *end1 != '\0' || *end2 != '\0' || count < 0 ||
        n != static_cast<long>(declared.size()) + 1) {
      fail(where(i) + ": expected 'ngram N=COUNT'");
    }
    declared.push_back(count);
    ++i;
  }
  if (static_cast<int>(declared.size()) != lm.order_) {
    fail(arpa_path + ": " + std::to_string(declared.size()) + " orders declared, lm.json says " +
         std::to_string(lm.order_));
  }
  lm.words_ = {"<unk>", "<s>", "</s>"};
  for (int k = 0; k < 3; ++k) lm.ids_[lm.words_[k]] = k;
  for (int n = 1; n <= lm.order_; ++n) {
    while (i < lines.size() && trim(lines[i]).empty()) ++i;
    if (i == lines.size() || trim(lines[i]) != "\\" + std::to_string(n) + "-grams:") {
      fail(where(i) + ": expected \\" + std::to_string(n) + "-grams: (a truncated or damaged ARPA file)");
    }
    ++i;
    for (long c = 0; c < declared[n - 1]; ++c, ++i) {
      std::vector<std::string> fields = i < lines.size() ? split(lines[i], '\t') : std::vector<std::string>{};
      std::vector<std::string> gram = fields.size() >= 2 ? split(fields[1], ' ') : std::vector<std::string>{};
      if ((fields.size() != 2 && fields.size() != 3) || static_cast<int>(gram.size()) != n) {
        fail(where(i) + ": expected 'LOG10PROB<TAB>" + std::to_string(n) +
             " words[<TAB>BACKOFF]' (a truncated or damaged ARPA file)");
      }
      double p = 0.0, b = 0.0;
      if (!parse_double(fields[0], &p) || (fields.size() == 3 && !parse_double(fields[2], &b))) {
        fail(where(i) + ": expected numbers");
      }
      std::vector<int> ids;
      for (const std::string& w : gram) {
        auto it = lm.ids_.find(w);
        if (it == lm.ids_.end()) {
          if (n != 1) fail(where(i) + ": a word that is not a unigram of the model");
          lm.ids_[w] = static_cast<int>(lm.words_.size());
          lm.words_.push_back(w);
          it = lm.ids_.find(w);
        }
        ids.push_back(it->second);
      }
      std::string k = key(ids, 0, ids.size(), -1);
      lm.prob_[k] = p * kLn10;
      if (fields.size() == 3) lm.backoff_[k] = b * kLn10;
    }
  }
  while (i < lines.size() && trim(lines[i]).empty()) ++i;
  if (i == lines.size() || trim(lines[i]) != "\\end\\") fail(arpa_path + ": missing \\end\\ (a truncated or damaged ARPA file)");
  if (lm.prob_.find(key({}, 0, 0, kUnk)) == lm.prob_.end()) {
    fail(arpa_path + ": no <unk> unigram; expected a model with an open vocabulary (as `allinone lm build` writes)");
  }
  return lm;
}

}  // namespace allinone
