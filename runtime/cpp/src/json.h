// Minimal JSON: enough to read a bundle's manifest.json and to write report.json. No external dependency.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace allinone {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  // Member `key` of an object; a shared null value when absent or when this is not an object.
  const Json& operator[](const std::string& key) const;
  // Follows a dotted path ("model.subnet.id"); null when any step is missing.
  const Json& at_path(const std::string& dotted) const;
  bool is_null() const { return type == Type::Null; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
};

// Parses UTF-8 JSON text; throws std::runtime_error("... at offset N") on malformed input.
Json parse_json(const std::string& text);

// `text` as a JSON string literal, quotes included.
std::string json_quote(const std::string& text);

}  // namespace allinone
