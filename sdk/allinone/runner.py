"""The native runner built for a device and written as a self-contained folder (`allinone runner`).

    allinone runner --target linux-arm64 --out DIR

cross-compiles runtime/cpp with the distribution's cross compiler against the ExecuTorch runtime of the
executorch wheel for that platform (same version as installed here, fetched with `pip download`), and writes:

    DIR/allinone_runner            launcher: checks every file below against runner.json, then loads the runner
    DIR/lib/liballinone_runner.so  the runner (rpath $ORIGIN)
    DIR/lib/libexecutorch*.so      the ExecuTorch libraries it needs, and nothing else from the wheel
    DIR/runner.json                every file with bytes and sha256; target, ExecuTorch version, glibc needed
    DIR/README.md                  how to run it on a board

`emulator_command` runs such a folder on this host under qemu-user, which the tests and
benchmarks/arm64_parity.py use to prove it before it ships.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from allinone.errors import BadInputError
from allinone.files import sha256_file

__all__ = ["Target", "TARGETS", "EMULATED_CPUS", "RUNNER_FORMAT_VERSION", "require_toolchain", "require_emulator",
           "fetch_executorch", "build_cross_runner", "write_runner_folder", "emulator_command", "cache_dir"]

RUNNER_FORMAT_VERSION = 1
SETUP_SCRIPT = "scripts/setup-arm64.sh"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Target:
    name: str  # as device profiles spell it
    triple: str  # GNU triple of the cross compiler and of Debian's sysroot /usr/<triple>
    wheel_platform: str  # pip's --platform for the executorch wheel
    compiler_package: str  # Debian package of the cross compiler
    qemu: str  # qemu-user binary that runs it here
    toolchain_file: str  # under runtime/cpp/toolchains

    @property
    def sysroot(self) -> Path:
        return Path("/usr") / self.triple


TARGETS = {"linux-arm64": Target("linux-arm64", "aarch64-linux-gnu", "manylinux_2_28_aarch64",
                                 "g++-aarch64-linux-gnu", "qemu-aarch64", "linux-arm64.cmake")}

# CPU models qemu-user emulates for the proofs, and which shipped targets each stands for. qemu 7.2's `max`
# (with SME) is left out on purpose: under it XNNPACK's 8-bit path gives wrong log-probs (docs/runtime.md).
EMULATED_CPUS = {
    "cortex-a53": "Raspberry Pi Zero 2 W (ARMv8.0 NEON)",
    "cortex-a76": "Raspberry Pi 5 (ARMv8.2, dot product; the Jetson Orin Nano's A78AE has the same features)",
    "max,sme=off": "recent phone cores (ARMv8.6+/v9: dot product, i8mm, bf16, SVE2), without SME",
}
DEFAULT_CPU = "cortex-a76"


def cache_dir() -> Path:
    """Where wheels, unpacked runtimes and cross builds are kept (outside the repository)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "allinone" / "cross"


def _target(name: str) -> Target:
    if name not in TARGETS:
        raise BadInputError(f"--target {name}: expected one of {', '.join(TARGETS)} (android-arm64 and ios-arm64: "
                            f"see docs/runtime.md)")
    return TARGETS[name]


def require_toolchain(target: Target) -> None:
    """BadInputError naming the Debian package unless cmake and the cross compiler are on PATH."""
    for tool, package in ((f"{target.triple}-g++", target.compiler_package), ("cmake", "cmake"),
                          (f"{target.triple}-readelf", f"binutils-{target.triple}")):
        if shutil.which(tool) is None:
            raise BadInputError(f"{tool} not found; the {target.name} runner needs the Debian package {package} "
                                f"(run: bash {SETUP_SCRIPT})")


def require_emulator(target: Target) -> None:
    """BadInputError naming the Debian package unless qemu-user and the target's sysroot are installed."""
    if shutil.which(target.qemu) is None:
        raise BadInputError(f"{target.qemu} not found; running the {target.name} runner on this host needs the "
                            f"Debian package qemu-user (run: bash {SETUP_SCRIPT})")
    if not any(target.sysroot.glob("lib/ld-linux-*.so.*")):
        raise BadInputError(f"{target.sysroot}: no {target.name} C library; running the runner under {target.qemu} "
                            f"needs the Debian package libc6-{target.name.split('-')[1]}-cross "
                            f"(run: bash {SETUP_SCRIPT})")


def emulator_command(target_name: str = "linux-arm64", cpu: str = DEFAULT_CPU) -> list[str]:
    """The command prefix that runs a `target_name` binary here under qemu-user emulating `cpu`. The runner
    records ALLINONE_EMULATOR as its report's device.emulator, so timings taken this way never pass as a device's."""
    target = _target(target_name)
    require_emulator(target)
    version = subprocess.run([target.qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    label = f"{version.strip()} -cpu {cpu} on {os.uname().machine}"
    return [target.qemu, "-cpu", cpu, "-L", str(target.sysroot), "-E", f"ALLINONE_EMULATOR={label}"]


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except FileNotFoundError:
        raise BadInputError(f"{cmd[0]} not found; {what} needs it (run: bash {SETUP_SCRIPT})") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
        raise BadInputError(f"{what} failed: " + " | ".join(tail))


def fetch_executorch(target: Target, version: str | None = None) -> Path:
    """The `target` executorch wheel's package root (holding lib/, include/, share/cmake), downloaded with pip
    and unpacked once into the cache; `version` defaults to the installed executorch's, so runner and bundles
    pair up."""
    version = version or importlib.metadata.version("executorch")
    root = cache_dir() / f"executorch-{version}-{target.wheel_platform}"
    if (root / "executorch" / "share" / "cmake" / "executorch-config.cmake").is_file():
        return root / "executorch"
    wheels = cache_dir() / "wheels"
    pattern = f"executorch-{version}-*-{target.wheel_platform}.whl"
    if not list(wheels.glob(pattern)):
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", target.wheel_platform, f"executorch=={version}", "-d", str(wheels)]
        _run(cmd, f"downloading the {target.name} executorch {version} wheel (" + " ".join(cmd[1:]) + ")")
    wheel = sorted(wheels.glob(pattern))[-1]
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=cache_dir()))
    with zipfile.ZipFile(wheel) as archive:  # the C++ parts only: the Python modules are for another interpreter
        archive.extractall(tmp, [n for n in archive.namelist()
                                 if n.startswith(("executorch/lib/", "executorch/include/", "executorch/share/"))])
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root / "executorch"


def build_cross_runner(target_name: str = "linux-arm64", build_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Cross-build runtime/cpp for `target_name`; returns (build folder, ExecuTorch package root)."""
    from allinone_runtime.cpp import CPP_SOURCE_DIR

    target = _target(target_name)
    require_toolchain(target)
    package = fetch_executorch(target)
    build_dir = Path(build_dir or cache_dir() / f"build-{target.name}")
    configure = ["cmake", "-S", str(CPP_SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_TOOLCHAIN_FILE={CPP_SOURCE_DIR / 'toolchains' / target.toolchain_file}",
                 f"-DCMAKE_PREFIX_PATH={package / 'share' / 'cmake'}"]
    _run(configure, f"configuring the {target.name} runner (cmake)")
    _run(["cmake", "--build", str(build_dir), "-j", str(min(2, os.cpu_count() or 1))],
         f"building the {target.name} runner")
    return build_dir, package


def _needed(readelf: str, path: Path) -> list[str]:
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def _glibc_needed(readelf: str, paths: list[Path]) -> str:
    """The newest GLIBC_x.y symbol version any of `paths` asks for: the board's glibc must be at least that."""
    versions = set()
    for path in paths:
        out = subprocess.run([readelf, "-V", str(path)], capture_output=True, text=True, check=True).stdout
        versions.update(tuple(int(x) for x in v.split(".")) for v in re.findall(r"Name: GLIBC_([0-9.]+)", out))
    return ".".join(map(str, max(versions))) if versions else "unknown"


def _readme(target: Target, glibc: str, executorch: str) -> str:
    return (f"# allinone native runner for {target.name}\n\n"
            f"Copy this whole folder to a 64-bit ARM Linux board (glibc {glibc} or newer, e.g. Raspberry Pi OS or "
            f"Debian 12, Ubuntu 22.04) and run `./allinone_runner BUNDLE AUDIO.wav --transcribe-only` (16 kHz WAV; "
            f"`--help` for latency reports). It reads bundles built with ExecuTorch {executorch} and checks every file "
            f"against runner.json before it loads any library.\n")


def write_runner_folder(out: str | Path, target_name: str = "linux-arm64", *, force: bool = False,
                        build_dir: str | Path | None = None) -> Path:
    """Cross-build the runner and write the self-contained folder `out` (temp folder, then renamed)."""
    from allinone import __version__

    out = Path(out)
    if out.exists() and not force:  # before minutes of building, not after
        raise BadInputError(f"{out}: already exists (pass --force to replace it)")
    target = _target(target_name)
    build, package = build_cross_runner(target_name, build_dir)
    readelf = f"{target.triple}-readelf"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the folder from other users on the board
    try:
        (tmp / "lib").mkdir()
        shutil.copy2(build / "allinone_runner", tmp / "allinone_runner")
        shutil.copy2(build / "liballinone_runner.so", tmp / "lib" / "liballinone_runner.so")
        # The ExecuTorch libraries the runner needs, followed through their own NEEDED entries; the system's
        # (glibc, libstdc++) come from the board.
        pending = _needed(readelf, tmp / "lib" / "liballinone_runner.so")
        while pending:
            name = pending.pop()
            source = package / "lib" / name
            if source.is_file() and not (tmp / "lib" / name).exists():
                shutil.copy2(source, tmp / "lib" / name)
                pending += _needed(readelf, source)
        binaries = [tmp / "allinone_runner", *sorted((tmp / "lib").iterdir())]
        glibc = _glibc_needed(readelf, binaries)
        executorch = _executorch_build_version(package)
        (tmp / "README.md").write_text(_readme(target, glibc, executorch))
        files = [{"path": p.relative_to(tmp).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in [*binaries, tmp / "README.md"]]
        manifest = {"format_version": RUNNER_FORMAT_VERSION, "kind": "allinone-runner", "target": target.name,
                    "executorch": executorch, "requires": {"glibc": glibc},
                    "built": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "compiler": _compiler_version(target), "allinone": __version__},
                    "run": "./allinone_runner BUNDLE AUDIO.wav --transcribe-only", "files": files}
        (tmp / "runner.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _executorch_build_version(package: Path) -> str:
    """The version the runner was compiled against (EXECUTORCH_BUILD_VERSION of the package, e.g. 1.5.1+cpu)."""
    text = (package / "share" / "cmake" / "executorch-config-version.cmake").read_text()
    found = re.search(r'set\(EXECUTORCH_BUILD_VERSION "([^"]+)"', text) or re.search(r'set\(PACKAGE_VERSION "([^"]+)"',
                                                                                      text)
    return found.group(1) if found else "unknown"


def _compiler_version(target: Target) -> str:
    out = subprocess.run([f"{target.triple}-g++", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else f"{target.triple}-g++"
