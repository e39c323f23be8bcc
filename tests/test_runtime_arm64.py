"""The native runner cross-built for linux-arm64 (`allinone runner`), proven under qemu-user: real .pte programs
of the tiny test checkpoint at every precision give the host runner's and the Python runtime's log-probs
(within the build's verification tolerance) and the same transcripts; the shipped folder refuses a tampered
library before loading it; reports made under emulation say so and calibration refuses them.

The slow tests need the cross toolchain and qemu (bash scripts/setup-arm64.sh). Without them they fail with
that one line rather than skip: slow tests are run on purpose, and a skipped proof reads like a passed one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from allinone.build import MAX_ABS_DIFF
from allinone.errors import BadInputError
from allinone.runner import EMULATED_CPUS, TARGETS, emulator_command, require_emulator, require_toolchain, \
    write_runner_folder
from allinone_runtime import Transcriber
from allinone_runtime.cpp import build_runner, run_runner
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import validate_report

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_overfit"
SAMPLE = ROOT / "sdk" / "allinone" / "assets" / "sample.wav"
BITS = (32, 8, 4)
ARM64 = TARGETS["linux-arm64"]


def _require_cross_tools() -> None:
    try:
        require_toolchain(ARM64)
        require_emulator(ARM64)
    except BadInputError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The shipped folder, cross-built from this checkout (~20 s on 2 cores once the wheel is cached)."""
    _require_cross_tools()
    base = tmp_path_factory.mktemp("arm64")
    return write_runner_folder(base / "runner", build_dir=base / "build")


@pytest.fixture(scope="module")
def host_runner(tmp_path_factory) -> Path:
    return build_runner(tmp_path_factory.mktemp("host-build"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[int, Path]:
    """Float, 8-bit and 4-bit bundles of the tiny test checkpoint (~40 s each on 2 cores)."""
    from allinone.build import export_bundle
    from allinone.checkpoint import load_checkpoint

    base = tmp_path_factory.mktemp("arm64-bundles")
    ckpt = load_checkpoint(TINY)
    return {bits: export_bundle(ckpt, f"d2-f128-h2-w{bits}", base / f"w{bits}") for bits in BITS}


@pytest.mark.slow
@pytest.mark.parametrize("cpu", list(EMULATED_CPUS))
@pytest.mark.parametrize("bits", BITS)
def test_arm64_runner_matches_host_runner_and_python(folder, host_runner, bundles, tmp_path, bits, cpu):
    bundle = bundles[bits]
    arm, _ = run_runner(folder / "allinone_runner", bundle, SAMPLE, threads=1, transcribe_only=True,
                        logprobs=tmp_path / "arm.npy", emulator=emulator_command("linux-arm64", cpu))
    host, _ = run_runner(host_runner, bundle, SAMPLE, threads=1, transcribe_only=True, logprobs=tmp_path / "host.npy")
    transcriber = Transcriber(bundle, threads=1)
    python_lp, calls = transcriber.log_probs(sf.read(str(SAMPLE), dtype="float32")[0])  # (T, V)
    arm_lp, host_lp = np.load(tmp_path / "arm.npy"), np.load(tmp_path / "host.npy")  # (1, T, V)
    assert calls == 1 and arm_lp.shape == host_lp.shape == (1, *python_lp.shape)
    assert np.abs(arm_lp - host_lp).max() <= MAX_ABS_DIFF[bits]
    assert np.abs(arm_lp[0] - python_lp).max() <= MAX_ABS_DIFF[bits]
    assert arm == host == transcriber.transcribe(SAMPLE).text
    assert len(arm.split()) >= 8, arm  # real text, not blanks


@pytest.mark.slow
def test_folder_is_self_contained_and_listed_with_sha256(folder):
    import hashlib

    manifest = json.loads((folder / "runner.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"runner.json"}
    assert set(listed) == on_disk
    for path, entry in listed.items():
        data = (folder / path).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert {"lib/libexecutorch.so", "lib/libexecutorch_backend_xnnpack.so", "lib/liballinone_runner.so"} <= on_disk
    assert manifest["target"] == "linux-arm64" and manifest["executorch"].startswith("1.5.1")
    dynamic = subprocess.run([f"{ARM64.triple}-readelf", "-d", str(folder / "lib" / "liballinone_runner.so")],
                             capture_output=True, text=True, check=True).stdout
    assert "Library runpath: [$ORIGIN]" in dynamic  # nothing from the build machine
    assert "./allinone_runner BUNDLE AUDIO.wav" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_tampered_library_is_refused_before_loading(folder, bundles, tmp_path):
    copy = Path(shutil.copytree(folder, tmp_path / "runner"))
    library = copy / "lib" / "libexecutorch_backend_xnnpack.so"
    library.write_bytes(library.read_bytes()[:4096])  # the loader would fail on this ("file too short")
    with pytest.raises(RuntimeInputError, match=r"libexecutorch_backend_xnnpack.so: sha256 \w+\.\.\. differs from "
                                                r"runner.json's \w+\.\.\.; the runner folder was altered"):
        run_runner(copy / "allinone_runner", bundles[4], SAMPLE, transcribe_only=True, emulator=emulator_command())


@pytest.mark.slow
def test_bundle_from_a_newer_executorch_is_refused_naming_both_versions(folder, bundles, tmp_path):
    bundle = Path(shutil.copytree(bundles[4], tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["versions"]["executorch"] = "9.0.0"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeInputError, match=r"built with executorch 9.0.0, but this runner links executorch "
                                                r"1\.5\.1\+cpu"):
        run_runner(folder / "allinone_runner", bundle, SAMPLE, transcribe_only=True, emulator=emulator_command())


@pytest.mark.slow
def test_emulated_report_says_so_and_calibrate_refuses_it(folder, bundles, tmp_path):
    _, report = run_runner(folder / "allinone_runner", bundles[8], SAMPLE, lengths_s=(1.0,), runs=2, threads=1,
                           out_dir=tmp_path / "out", emulator=emulator_command("linux-arm64", "cortex-a76"))
    assert validate_report(report)["device"]["machine"] == "aarch64"
    assert report["device"]["emulator"].startswith("qemu-aarch64 version") and "-cpu cortex-a76" in \
        report["device"]["emulator"]
    done = subprocess.run([str(Path(sys.executable).parent / "allinone"), "calibrate", "--profile", "raspberry-pi-5",
                           "--report", str(tmp_path / "out" / "report.json"), "--out", str(tmp_path / "p.yaml"),
                           "--force"], capture_output=True, text=True)
    assert done.returncode == 2 and not (tmp_path / "p.yaml").exists()
    assert done.stderr.count("\n") == 1 and "device.emulator: measured under emulation" in done.stderr


def test_missing_cross_compiler_or_emulator_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH holding neither
    with pytest.raises(BadInputError, match=r"aarch64-linux-gnu-g\+\+ not found; .* Debian package "
                                            r"g\+\+-aarch64-linux-gnu \(run: bash scripts/setup-arm64.sh\)"):
        write_runner_folder(tmp_path / "runner")
    with pytest.raises(BadInputError, match=r"qemu-aarch64 not found; .* Debian package qemu-user"):
        emulator_command()
    assert not (tmp_path / "runner").exists()
