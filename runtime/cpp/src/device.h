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
// The CPU as a device record names it, from the text of /proc/cpuinfo: arm64 core names with counts
// ("4x Cortex-A55 + 2x Cortex-A76 (board)"), else x86's model name; empty when the text names none. The same
// string as allinone_runtime.device.cpu_model_from_cpuinfo.
std::string cpu_model_from_cpuinfo(const std::string& cpuinfo);
// The report's "device" object, one line of JSON.
std::string device_json(const DeviceInfo& d);
int64_t peak_rss_bytes();     // VmHWM (Linux), ru_maxrss elsewhere
int64_t current_rss_bytes();  // VmRSS (Linux), the peak elsewhere
std::string utc_now_iso8601();  // e.g. 2026-11-25T23:32:22+00:00, as Python's isoformat(timespec="seconds")

}  // namespace allinone
