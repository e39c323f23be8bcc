// allinone_runner as shipped in a runner folder (`allinone runner --target linux-arm64`):
//
//   DIR/allinone_runner            this launcher; links nothing from ExecuTorch
//   DIR/lib/liballinone_runner.so  the runner itself (main.cpp), rpath $ORIGIN
//   DIR/lib/libexecutorch*.so      the ExecuTorch runtime, kernels and XNNPACK delegate
//   DIR/runner.json                every file with its sha256
//
// A damaged or replaced library must be refused before the dynamic loader maps it (a loaded library's
// constructors have already run), so the launcher checks every file in runner.json first and only then
// dlopen()s the runner. The check guards against corruption and mix-ups, not against someone who can also
// rewrite runner.json.
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "json.h"
#include "sha256.h"

namespace {

constexpr int kExitBadInput = 2;
const char* kManifest = "runner.json";
const char* kLibrary = "lib/liballinone_runner.so";

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

std::string own_directory() {
  char path[PATH_MAX] = {};
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) fail("cannot find this runner's folder (/proc/self/exe is unreadable)");
  std::string exe(path, static_cast<size_t>(n));
  return exe.substr(0, exe.rfind('/'));
}

// Every file runner.json lists must exist with the listed sha256; paths stay inside the folder.
void check_folder(const std::string& dir) {
  const std::string where = dir + "/" + kManifest;
  std::ifstream in(where);
  if (!in) fail(where + ": missing; a runner folder holds runner.json (write it again with `allinone runner`)");
  std::stringstream text;
  text << in.rdbuf();
  allinone::Json manifest;
  try {
    manifest = allinone::parse_json(text.str());
  } catch (const std::exception& err) {
    fail(where + ": not valid JSON (" + err.what() + ")");
  }
  if (manifest["kind"].string != "allinone-runner") fail(where + ": kind: expected 'allinone-runner'");
  const allinone::Json& files = manifest["files"];
  if (files.type != allinone::Json::Type::Array || files.array.empty()) fail(where + ": files: expected a list");
  bool lists_library = false;
  for (const allinone::Json& file : files.array) {
    const std::string& name = file["path"].string;
    const std::string& expected = file["sha256"].string;
    if (name.empty() || name[0] == '/' || name.find("..") != std::string::npos || expected.size() != 64) {
      fail(where + ": files: expected entries {\"path\": relative path inside the folder, \"sha256\": 64 hex digits}");
    }
    const std::string path = dir + "/" + name;
    std::string actual;
    try {
      actual = allinone::sha256_file(path);
    } catch (const std::exception&) {
      fail(path + ": missing or unreadable; " + kManifest + " lists it (write the folder again with `allinone runner`)");
    }
    if (actual != expected) {
      fail(path + ": sha256 " + actual.substr(0, 12) + "... differs from " + kManifest + "'s " +
           expected.substr(0, 12) + "...; the runner folder was altered or damaged, refusing to load it (write "
           "it again with `allinone runner`)");
    }
    lists_library = lists_library || name == kLibrary;
  }
  if (!lists_library) fail(where + ": files: does not list " + kLibrary);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string dir = own_directory();
    check_folder(dir);
    const std::string library = dir + "/" + kLibrary;
    void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) fail(std::string("cannot load ") + library + ": " + dlerror());
    using Main = int (*)(int, char**);
    auto entry = reinterpret_cast<Main>(dlsym(handle, "allinone_runner_main"));
    if (entry == nullptr) fail(library + ": no allinone_runner_main; the folder mixes runner versions");
    return entry(argc, argv);
  } catch (const std::exception& err) {
    std::fprintf(stderr, "allinone_runner: error: %s\n", err.what());
    return kExitBadInput;
  }
}
