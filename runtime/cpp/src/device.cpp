#include "device.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "json.h"

namespace allinone {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t");
  size_t b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// The first "Key:   value" line of a /proc file's text; empty when absent.
std::string text_field(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) return trim(line.substr(colon + 1));
  }
  return "";
}

std::string read_text(const char* path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string proc_field(const char* path, const std::string& key) { return text_field(read_text(path), key); }

// /proc/cpuinfo, or the file ALLINONE_CPUINFO names (allinone_runtime.device.CPUINFO_ENV): tests point both
// runtimes at real cpuinfo texts of other machines (tests/fixtures/cpuinfo) this way. Empty where there is none.
std::string cpuinfo_text() {
  const char* path = std::getenv("ALLINONE_CPUINFO");
  return read_text(path != nullptr && *path != '\0' ? path : "/proc/cpuinfo");
}

// "0x41", as the kernel prints MIDR fields; the same check as allinone_runtime.device._HEX.
bool is_hex(const std::string& s) {
  if (s.size() < 3 || s.size() > 10 || s.compare(0, 2, "0x") != 0) return false;
  for (size_t k = 2; k < s.size(); ++k)
    if (!std::isxdigit(static_cast<unsigned char>(s[k]))) return false;
  return true;
}

// "Cortex-A76" for an Arm Ltd core the shared table knows, else the raw pair: "implementer 0x51 part 0x805".
std::string core_name(const std::string& implementer, const std::string& part) {
  static const std::pair<unsigned long, const char*> arm_cores[] = {
#include "../../allinone_runtime/arm_cores.inc"
  };
  if (!is_hex(implementer) || !is_hex(part)) return "implementer " + implementer + " part " + part;
  unsigned long implementer_id = std::stoul(implementer, nullptr, 16), part_id = std::stoul(part, nullptr, 16);
  if (implementer_id == 0x41)
    for (const auto& core : arm_cores)
      if (core.first == part_id) return core.second;
  char raw[64];
  std::snprintf(raw, sizeof(raw), "implementer 0x%02lx part 0x%03lx", implementer_id, part_id);
  return raw;
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
  std::string vendor = proc_field("/proc/cpuinfo", "vendor_id");  // the real one, whatever ALLINONE_CPUINFO says
  if (!vendor.empty()) return "qemu-user (detected: an x86 host's /proc/cpuinfo, " + vendor + ")";
#endif
  return "";
}

// The features allinone_runtime.device.ISA_FEATURES lists, in its order (keep the two lists the same): the
// ones that decide which GEMM kernels XNNPACK runs for fp32, 8-bit and 4-bit weights, spelt as Linux's
// /proc/cpuinfo spells them ("flags" on x86, "Features" on arm64).
std::vector<std::string> isa_features(const std::string& machine, const std::string& cpuinfo) {
  static const std::vector<std::string> x86 = {"fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                               "amx_int8"};
  static const std::vector<std::string> arm = {"asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme"};
  const std::vector<std::string>* known = nullptr;
  if (machine == "x86_64" || machine == "amd64") known = &x86;
  if (machine == "aarch64" || machine == "arm64") known = &arm;
  std::vector<std::string> out;
  if (known == nullptr) return out;
  std::string line = text_field(cpuinfo, machine == "x86_64" || machine == "amd64" ? "flags" : "Features");
  std::istringstream words(line);
  std::set<std::string> have;
  for (std::string w; words >> w;) have.insert(w);
  for (const auto& name : *known)
    if (have.count(name)) out.push_back(name);
  return out;
}

}  // namespace

// The same string as allinone_runtime.device.cpu_model_from_cpuinfo (see its docstring), line for line.
std::string cpu_model_from_cpuinfo(const std::string& cpuinfo) {
  std::vector<std::pair<std::string, int>> cores;  // core name, count; in order of first appearance
  std::string model_name, model, hardware;         // the first non-empty of each
  std::string implementer = "?";
  std::istringstream in(cpuinfo);
  for (std::string line; std::getline(in, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    if (key == "processor") {  // a new core: its implementer line follows
      implementer = "?";
    } else if (key == "CPU implementer") {
      implementer = value;
    } else if (key == "CPU part") {
      std::string name = core_name(implementer, value);
      auto it = cores.begin();
      while (it != cores.end() && it->first != name) ++it;
      if (it == cores.end()) cores.emplace_back(name, 1);
      else ++it->second;
    } else if (key == "model name" && model_name.empty()) {
      model_name = value;
    } else if (key == "Model" && model.empty()) {
      model = value;
    } else if (key == "Hardware" && hardware.empty()) {
      hardware = value;
    }
  }
  std::string board = model.empty() ? hardware : model;
  if (cores.empty()) return model_name.empty() ? board : model_name;
  std::string names;
  for (const auto& core : cores)
    names += (names.empty() ? "" : " + ") + std::to_string(core.second) + "x " + core.first;
  return board.empty() ? names : names + " (" + board + ")";
}

std::string device_json(const DeviceInfo& d) {
  std::string isa;
  for (size_t k = 0; k < d.isa.size(); ++k) isa += (k ? ", " : "") + json_quote(d.isa[k]);
  return "{\"hostname\": " + json_quote(d.hostname) + ", \"machine\": " + json_quote(d.machine) +
         ", \"system\": " + json_quote(d.system) + ", \"cpu\": " + json_quote(d.cpu) +
         ", \"cores\": " + std::to_string(d.cores) + ", \"isa\": [" + isa + "]" +
         (d.emulator.empty() ? "" : ", \"emulator\": " + json_quote(d.emulator)) + "}";
}

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
  std::string cpuinfo = cpuinfo_text();
  d.cpu = cpu_model_from_cpuinfo(cpuinfo);
  if (d.cpu.empty()) d.cpu = "unknown";
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  d.cores = n > 0 ? static_cast<int>(n) : 1;
  d.emulator = emulator();
  d.isa = isa_features(d.machine, cpuinfo);
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
