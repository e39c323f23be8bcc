# Cross-compile the native runner for linux-arm64 (aarch64, glibc) on an x86-64 Debian/Ubuntu host with the
# distribution's cross compiler (Debian package g++-aarch64-linux-gnu). ExecuTorch comes from its
# manylinux aarch64 wheel, unpacked elsewhere and passed as CMAKE_PREFIX_PATH (`allinone runner` does both):
#
#   cmake -S runtime/cpp -B build/arm64 --toolchain runtime/cpp/toolchains/linux-arm64.cmake \
#     -DCMAKE_PREFIX_PATH=<unpacked aarch64 wheel>/executorch/share/cmake
#   cmake --build build/arm64 -j2
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(ALLINONE_CROSS_TRIPLE aarch64-linux-gnu CACHE STRING "GNU triple of the cross compiler")
set(CMAKE_C_COMPILER ${ALLINONE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${ALLINONE_CROSS_TRIPLE}-g++)

# Debian installs the target's glibc and libstdc++ under /usr/<triple>; libraries and headers come only from
# there (never the host's), packages from anywhere (the ExecuTorch package lives outside the sysroot).
set(CMAKE_FIND_ROOT_PATH /usr/${ALLINONE_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# How CMake (and `allinone runner`) runs an arm64 binary on this host: qemu-user with the cross sysroot.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${ALLINONE_CROSS_TRIPLE})
set(ALLINONE_RUNNER_FOLDER ON CACHE BOOL "build the shipped layout (launcher + lib/liballinone_runner.so)")
