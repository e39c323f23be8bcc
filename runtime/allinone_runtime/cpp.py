"""Build and call the native runner (runtime/cpp) from Python, for `bench --runner cpp`, tests and benchmarks.

The runner links the ExecuTorch libraries shipped in the installed executorch wheel; CMake finds them
through the wheel's package config (site-packages/executorch/share/cmake).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import read_json_file, validate_report

__all__ = ["CPP_SOURCE_DIR", "executorch_cmake_dir", "build_runner", "run_runner", "default_build_dir"]

CPP_SOURCE_DIR = Path(__file__).resolve().parent.parent / "cpp"  # present in a source checkout
BUILD_TIMEOUT_S = 900


def executorch_cmake_dir() -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeInputError("executorch is not installed; the C++ runner links the libraries its wheel ships")
    path = Path(list(spec.submodule_search_locations)[0]) / "share" / "cmake"
    if not (path / "executorch-config.cmake").is_file():
        raise RuntimeInputError(f"{path}: no executorch-config.cmake; this executorch wheel ships no CMake package")
    return path


def default_build_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "allinone" / "cpp-runner"


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except FileNotFoundError:
        raise RuntimeInputError(f"{cmd[0]} not found; building the C++ runner needs cmake and a C++17 compiler "
                                f"(Debian: apt-get install cmake g++)") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeInputError(f"{what} failed: " + " | ".join(tail))


def build_runner(build_dir: str | Path | None = None, source_dir: str | Path = CPP_SOURCE_DIR) -> Path:
    """Configure and build `allinone_runner` (incrementally: a second call only relinks what changed)."""
    source_dir, build_dir = Path(source_dir), Path(build_dir or default_build_dir())
    if not (source_dir / "CMakeLists.txt").is_file():
        raise RuntimeInputError(f"{source_dir}: C++ runner sources not found (they ship with the allinone source "
                                f"tree, runtime/cpp)")
    configure = ["cmake", "-S", str(source_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={executorch_cmake_dir()}"]
    if shutil.which("ninja") and not (build_dir / "Makefile").exists():
        configure += ["-G", "Ninja"]
    _run(configure, "configuring the C++ runner (cmake)")
    _run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 1)], "building the C++ runner")
    return build_dir / "allinone_runner"


def run_runner(binary: str | Path, bundle: str | Path, audio: str | Path, *, lengths_s=(1.0, 5.0, 10.0, 20.0),
               runs: int = 10, threads: int | None = None, out_dir: str | Path | None = None,
               etdump: str | Path | None = None, transcribe_only: bool = False, logprobs: str | Path | None = None,
               emulator: list[str] | tuple[str, ...] = (), timeout_s: float = 3600) -> tuple[str, dict | None]:
    """Run the native runner; returns (transcript, validated report or None when nothing was written).

    `logprobs` writes one call's log-probs on the whole clip as .npy; `emulator` is a command prefix that runs a
    cross-built runner here (`allinone.runner.emulator_command`)."""
    cmd = [*emulator, str(binary), str(bundle), str(audio)]
    if transcribe_only:
        cmd.append("--transcribe-only")
    else:
        cmd += ["--lengths", ",".join(f"{x:g}" for x in lengths_s), "--runs", str(runs)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if out_dir is not None:
        cmd += ["--out", str(out_dir)]
    if etdump is not None:
        cmd += ["--etdump", str(etdump)]
    if logprobs is not None:
        cmd += ["--logprobs", str(logprobs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
        lines = errors or done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeInputError("C++ runner: " + lines[-1].replace("allinone_runner: error: ", ""))
    transcript = done.stdout.rstrip("\n").splitlines()[-1] if done.stdout.strip() else ""
    report = None
    if out_dir is not None and not transcribe_only:
        path = Path(out_dir) / "report.json"
        report = validate_report(read_json_file(path, "the C++ runner's report.json"), str(path))
    return transcript, report
