#include "wav.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace allinone {

namespace {

uint32_t u32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }
uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

constexpr uint16_t kPcm = 1, kFloat = 3, kExtensible = 0xFFFE;

// One sample at `p` as float in [-1, 1], matching libsndfile's scaling (integers divided by 2^(bits-1)).
float sample_at(const uint8_t* p, uint16_t format, uint16_t bits) {
  if (format == kFloat) {
    if (bits == 32) {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    double d;
    std::memcpy(&d, p, 8);
    return static_cast<float>(d);
  }
  switch (bits) {
    case 8: return (static_cast<int>(p[0]) - 128) / 128.0f;  // 8-bit WAV is unsigned
    case 16: return static_cast<int16_t>(u16(p)) / 32768.0f;
    case 24: {
      int32_t v = static_cast<int32_t>((uint32_t{p[0]} << 8) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 24)) >> 8;
      return v / 8388608.0f;
    }
    default: return static_cast<float>(static_cast<int32_t>(u32(p)) / 2147483648.0);
  }
}

}  // namespace

WavAudio read_wav(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": audio file not found or unreadable");
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 12 || std::memcmp(data.data(), "RIFF", 4) != 0 || std::memcmp(data.data() + 8, "WAVE", 4) != 0) {
    throw std::runtime_error(path + ": not a WAV file (no RIFF/WAVE header); convert it to 16 kHz WAV first");
  }
  uint16_t format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  const uint8_t* samples = nullptr;
  size_t sample_bytes = 0, promised_bytes = 0;
  for (size_t pos = 12; pos + 8 <= data.size();) {
    uint32_t size = u32(data.data() + pos + 4);
    const uint8_t* body = data.data() + pos + 8;
    size_t available = std::min<size_t>(size, data.size() - pos - 8);
    if (std::memcmp(data.data() + pos, "fmt ", 4) == 0 && available >= 16) {
      format = u16(body);
      channels = u16(body + 2);
      rate = u32(body + 4);
      bits = u16(body + 14);
      if (format == kExtensible && available >= 26) format = u16(body + 24);  // sub-format GUID starts with the tag
    } else if (std::memcmp(data.data() + pos, "data", 4) == 0) {
      samples = body;
      sample_bytes = available;
      // 0 and 0xFFFFFFFF: written as a stream of unknown length, so the header promises nothing.
      promised_bytes = (size == 0 || size == 0xFFFFFFFFu) ? available : size;
    }
    pos += 8 + size + (size & 1);  // chunks are padded to even sizes
  }
  if (format == 0 || channels == 0 || rate == 0) throw std::runtime_error(path + ": WAV file without a valid fmt chunk");
  bool supported = (format == kPcm && (bits == 8 || bits == 16 || bits == 24 || bits == 32)) ||
                   (format == kFloat && (bits == 32 || bits == 64));
  if (!supported) {
    throw std::runtime_error(path + ": WAV sample format " + std::to_string(format) + " with " + std::to_string(bits) +
                             " bits is not supported; expected PCM 8/16/24/32-bit or float32/64");
  }
  size_t frame_bytes = size_t{channels} * (bits / 8);
  size_t frames = samples ? sample_bytes / frame_bytes : 0;
  size_t promised = promised_bytes / frame_bytes;
  if (frames < promised) {  // a copy cut short: the Python runtime refuses it too, rather than transcribe less
    throw std::runtime_error(path + ": truncated WAV: the header promises " + std::to_string(promised) +
                             " frames, the file holds " + std::to_string(frames) + "; expected a complete audio file");
  }
  if (frames == 0) throw std::runtime_error(path + ": empty audio (0 samples)");
  WavAudio audio;
  audio.sample_rate = static_cast<int>(rate);
  audio.channels = channels;
  audio.samples.resize(frames);
  for (size_t i = 0; i < frames; ++i) {
    float sum = 0.0f;
    for (uint16_t c = 0; c < channels; ++c) sum += sample_at(samples + i * frame_bytes + c * (bits / 8), format, bits);
    audio.samples[i] = channels == 1 ? sum : sum / channels;
  }
  return audio;
}

}  // namespace allinone
