#include "device.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>

namespace allinone {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t");
  size_t b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// A "Key:   value" line of a /proc file; empty when absent.
std::string proc_field(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) return trim(line.substr(colon + 1));
  }
  return "";
}

int64_t status_kib(const std::string& key) {
  std::string value = proc_field("/proc/self/status", key);
  return value.empty() ? -1 : std::stoll(value);  // "123456 kB"
}

// Timings taken under emulation say nothing about a device, so a report must say it was emulated.
// ALLINONE_EMULATOR is what `allinone`'s qemu wrapper passes in (qemu -E); without it, an ARM binary that
// sees an x86 /proc/cpuinfo (qemu-user passes the host's through) is emulated all the same.
std::string emulator() {
  const char* named = std::getenv("ALLINONE_EMULATOR");
  if (named != nullptr && *named != '\0') return named;
#if defined(__aarch64__) || defined(__arm__)
  std::string vendor = proc_field("/proc/cpuinfo", "vendor_id");
  if (!vendor.empty()) return "qemu-user (detected: an x86 host's /proc/cpuinfo, " + vendor + ")";
#endif
  return "";
}

// The features allinone_runtime.device.ISA_FEATURES lists, in its order (keep the two lists the same): the
// ones that decide which GEMM kernels XNNPACK runs for fp32, 8-bit and 4-bit weights, spelt as Linux's
// /proc/cpuinfo spells them ("flags" on x86, "Features" on arm64).
std::vector<std::string> isa_features(const std::string& machine) {
  static const std::vector<std::string> x86 = {"fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                               "amx_int8"};
  static const std::vector<std::string> arm = {"asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme"};
  const std::vector<std::string>* known = nullptr;
  if (machine == "x86_64" || machine == "amd64") known = &x86;
  if (machine == "aarch64" || machine == "arm64") known = &arm;
  std::vector<std::string> out;
  if (known == nullptr) return out;
  std::string line = proc_field("/proc/cpuinfo", machine == "x86_64" || machine == "amd64" ? "flags" : "Features");
  std::istringstream words(line);
  std::set<std::string> have;
  for (std::string w; words >> w;) have.insert(w);
  for (const auto& name : *known)
    if (have.count(name)) out.push_back(name);
  return out;
}

}  // namespace

DeviceInfo device_info() {
  DeviceInfo d;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  d.hostname = host;
  struct utsname u {};
  if (uname(&u) == 0) {
    d.machine = u.machine;
    d.system = std::string(u.sysname) + " " + u.release;
  }
  for (const char* key : {"model name", "Hardware", "Model"}) {  // x86 / older ARM kernels / Raspberry Pi
    d.cpu = proc_field("/proc/cpuinfo", key);
    if (!d.cpu.empty()) break;
  }
  if (d.cpu.empty()) d.cpu = "unknown";
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  d.cores = n > 0 ? static_cast<int>(n) : 1;
  d.emulator = emulator();
  d.isa = isa_features(d.machine);
  return d;
}

int64_t peak_rss_bytes() {
  int64_t kib = status_kib("VmHWM");
  if (kib >= 0) return kib * 1024;
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
#ifdef __APPLE__
  return usage.ru_maxrss;  // bytes on macOS
#else
  return int64_t{usage.ru_maxrss} * 1024;
#endif
}

int64_t current_rss_bytes() {
  int64_t kib = status_kib("VmRSS");
  return kib >= 0 ? kib * 1024 : peak_rss_bytes();
}

std::string utc_now_iso8601() {
  std::time_t now = std::time(nullptr);
  std::tm tm {};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
  return buf;
}

}  // namespace allinone
