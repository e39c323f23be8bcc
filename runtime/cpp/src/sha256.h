// SHA-256 (FIPS 180-4) of a file, to check model.pte against the manifest like the Python runtime does.
#pragma once

#include <string>

namespace allinone {

// Lower-case hex digest of the file at `path`; throws std::runtime_error if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace allinone
