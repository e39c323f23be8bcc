#include "bundle.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "json.h"
#include "sha256.h"

namespace allinone {

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

const Json& require(const Json& manifest, const std::string& key, Json::Type type, const std::string& where) {
  const Json& value = manifest.at_path(key);
  if (value.is_null()) fail(where + ": " + key + ": missing; the runner needs it (see docs/formats.md, Bundle manifest)");
  if (value.type != type) fail(where + ": " + key + ": has the wrong type");
  return value;
}

// Leading "major.minor" of a version string such as "1.5.1+cpu".
std::pair<int, int> release(const std::string& version, const std::string& what) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) != 2) {
    fail(what + ": expected an ExecuTorch version like '1.5.1', got '" + version + "'");
  }
  return {major, minor};
}

}  // namespace

Bundle open_bundle(const std::string& directory, const std::string& installed_executorch) {
  struct stat st {};
  if (stat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    fail(directory + ": not a bundle directory (expected a folder holding model.pte and manifest.json)");
  }
  const std::string where = directory + "/manifest.json";
  std::ifstream in(where);
  if (!in) fail(where + ": missing; a bundle is model.pte + manifest.json (rebuild it with `allinone build`)");
  std::stringstream text;
  text << in.rdbuf();
  Json manifest;
  try {
    manifest = parse_json(text.str());
  } catch (const std::exception& err) {
    fail(where + ": not valid JSON (" + err.what() + ")");
  }
  const Json& version = manifest["format_version"];
  if (!version.is_number() || (version.number != 1 && version.number != 2)) {
    fail(where + ": format_version: expected 1 or 2; this runner reads bundle formats 1 or 2 only");
  }
  if (manifest["kind"].string != "allinone-bundle") fail(where + ": kind: expected 'allinone-bundle'");

  Bundle b;
  b.path = directory;
  for (const Json& symbol : require(manifest, "vocabulary.vocab", Json::Type::Array, where).array) {
    if (!symbol.is_string()) fail(where + ": vocabulary.vocab: expected a list of strings");
    b.vocab.push_back(symbol.string);
  }
  if (b.vocab.size() < 2) fail(where + ": vocabulary.vocab: expected at least 2 symbols");
  if (require(manifest, "io.output.blank_id", Json::Type::Number, where).number != 0) fail(where + ": io.output.blank_id: expected 0");
  b.sample_rate = static_cast<int>(require(manifest, "sample_rate", Json::Type::Number, where).number);
  b.min_samples = static_cast<int64_t>(require(manifest, "io.input.min_samples", Json::Type::Number, where).number);
  b.max_samples = static_cast<int64_t>(require(manifest, "io.input.max_samples", Json::Type::Number, where).number);
  if (version.number >= 2) {
    b.length_step = static_cast<int64_t>(require(manifest, "io.input.length_step", Json::Type::Number, where).number);
  }
  if (b.length_step < 1 || (b.max_samples - b.min_samples) % b.length_step != 0) {
    fail(where + ": io.input.length_step: expected >= 1 and dividing max_samples - min_samples");
  }
  b.frame_shift_s = require(manifest, "io.output.frame_shift_s", Json::Type::Number, where).number;
  if (b.sample_rate <= 0 || b.min_samples <= 0 || b.min_samples > b.max_samples || b.frame_shift_s <= 0) {
    fail(where + ": io: expected sample_rate > 0, 0 < min_samples <= max_samples and frame_shift_s > 0");
  }
  b.subnet = require(manifest, "model.subnet.id", Json::Type::String, where).string;
  b.weight_bits = static_cast<int>(require(manifest, "quantization.weight_bits", Json::Type::Number, where).number);
  const Json& macs = manifest.at_path("model.macs_per_second");
  b.has_macs = macs.is_number();
  b.macs_per_second = macs.number;
  b.profile = manifest.at_path("profile.name").string;
  b.executorch_built = require(manifest, "versions.executorch", Json::Type::String, where).string;
  const std::string expected_sha = require(manifest, "pte.sha256", Json::Type::String, where).string;
  b.pte_path = directory + "/" + require(manifest, "pte.file", Json::Type::String, where).string;

  if (stat(b.pte_path.c_str(), &st) != 0) fail(b.pte_path + ": missing; the manifest names it as the bundle's program");
  b.pte_bytes = st.st_size;
  b.pte_sha256 = sha256_file(b.pte_path);
  if (b.pte_sha256 != expected_sha) {
    fail(b.pte_path + ": sha256 " + b.pte_sha256.substr(0, 12) + "... differs from the manifest's " +
         expected_sha.substr(0, 12) + "...; the file is corrupted or was replaced (rebuild the bundle)");
  }
  // ExecuTorch guarantees a .pte runs on its own release and the next non-patch one; never on an older runtime.
  auto built = release(b.executorch_built, where + ": versions.executorch");
  auto installed = release(installed_executorch, "runner's executorch");
  if (installed < built) {
    fail(where + ": built with executorch " + b.executorch_built + ", but this runner links executorch " +
         installed_executorch + "; an older runtime cannot be trusted with a newer program: rebuild one of them");
  }
  b.compat_guaranteed = installed == built || installed == std::make_pair(built.first, built.second + 1) ||
                        installed == std::make_pair(built.first + 1, 0);
  return b;
}

std::vector<float> fit_input(const Bundle& bundle, std::vector<float> samples) {
  const int64_t n = static_cast<int64_t>(samples.size());
  int64_t fitted = bundle.min_samples;
  if (n > bundle.min_samples) fitted += (n - bundle.min_samples) / bundle.length_step * bundle.length_step;
  if (fitted > bundle.max_samples) {
    throw std::runtime_error(std::to_string(n) + " samples is longer than one call of the program (" +
                             std::to_string(bundle.max_samples) + " samples); expected shorter audio");
  }
  samples.resize(static_cast<size_t>(fitted), 0.0f);
  return samples;
}

}  // namespace allinone
