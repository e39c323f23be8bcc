// Minimal WAV reader: RIFF/WAVE with PCM 16/24/32-bit or IEEE float32/64 samples, any channel count
// (mixed down to mono by averaging). Other containers are for the Python runtime, which decodes and resamples.
#pragma once

#include <string>
#include <vector>

namespace allinone {

struct WavAudio {
  std::vector<float> samples;  // mono, in [-1, 1]
  int sample_rate = 0;
  int channels = 0;
};

// Throws std::runtime_error with a one-line reason ("PATH: ...") when the file is not a readable WAV.
WavAudio read_wav(const std::string& path);

}  // namespace allinone
