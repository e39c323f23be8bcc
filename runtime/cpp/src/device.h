// The machine a measurement was taken on and this process's memory, as report.json records them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace allinone {

struct DeviceInfo {
  std::string hostname, machine, system, cpu;
  int cores = 1;
  std::vector<std::string> isa;  // CPU features that decide kernel choice, as allinone_runtime.device records them
  std::string emulator;  // empty on real hardware; else the emulator running this binary (e.g. qemu-aarch64)
};

DeviceInfo device_info();
int64_t peak_rss_bytes();     // VmHWM (Linux), ru_maxrss elsewhere
int64_t current_rss_bytes();  // VmRSS (Linux), the peak elsewhere
std::string utc_now_iso8601();  // e.g. 2026-11-25T23:32:22+00:00, as Python's isoformat(timespec="seconds")

}  // namespace allinone
