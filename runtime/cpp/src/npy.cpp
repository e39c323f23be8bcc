#include "npy.h"

#include <cstdint>
#include <fstream>
#include <stdexcept>

namespace allinone {

void write_npy(const std::string& path, const LogProbs& lp) {
  // Format 1.0: magic, version, little-endian header length, a Python dict literal padded so the data starts
  // on a 64-byte boundary. '<f4' holds on every target this runner is built for (x86-64, aarch64).
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, " + std::to_string(lp.frames) + ", " +
                       std::to_string(lp.vocab_size) + "), }";
  const size_t preamble = 10;
  header.append(64 - (preamble + header.size() + 1) % 64, ' ');
  header += '\n';
  const uint16_t length = static_cast<uint16_t>(header.size());
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error(path + ": cannot write the log-probs");
  out.write("\x93NUMPY\x01\x00", 8);
  const char length_le[2] = {static_cast<char>(length & 0xff), static_cast<char>(length >> 8)};
  out.write(length_le, 2);
  out << header;
  out.write(reinterpret_cast<const char*>(lp.values.data()), static_cast<std::streamsize>(lp.values.size() * sizeof(float)));
  if (!out) throw std::runtime_error(path + ": cannot write the log-probs");
}

}  // namespace allinone
