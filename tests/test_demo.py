"""`allinone demo` end to end on the trained tiny checkpoint: bundles for two profiles and one that nothing fits,
the clip transcribed by this machine's bundle exactly like the eager model, one table with measured/predicted
labels, demo.json and the runtime's report; a log that says each stage once, with no ExecuTorch chatter, and
"what next" commands that run as printed; reruns replace the demo's own output, foreign directories are refused."""

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from allinone.build import sample_audio
from allinone.checkpoint import load_checkpoint
from allinone.demo import DEMO_MARKER, match_host_profile
from allinone.profiles import load_profile
from allinone.quantize import quantize_subnet_
from allinone.spec import SubnetSpec
from allinone_runtime import Bundle
from allinone_runtime.device import device_info
from allinone_runtime.report import load_report
from conftest import ROOT, SAMPLE_TEXT, board_profile, clip_catalog_checkpoint
from conftest import run_allinone as _run

NO_FIT_PROFILE = board_profile("tight-board", "a test board with room for no model at all", max_model_mib=0.1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The trained tiny fixture with a catalog measured on the clip it learned (no activation probes: they
    lower every precision, which the demo does not need)."""
    return clip_catalog_checkpoint(tmp_path_factory.mktemp("ckpt"), "--no-activations")


def _eager_transcript(checkpoint: Path, subnet: str) -> str:
    ckpt = load_checkpoint(checkpoint)
    spec = SubnetSpec.from_id(subnet)
    eager = ckpt.model.extract_subnet(spec)
    quantize_subnet_(eager, spec.weight_bits)
    with torch.no_grad():
        return ckpt.tokenizer().decode_ctc(eager(sample_audio(), None)[0][0].argmax(-1).tolist())


def _table_row(text: str, profile: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {profile} |")]
    assert len(rows) == 1, text
    return rows[0]


@pytest.fixture(scope="module")
def demo_run(checkpoint, tmp_path_factory):
    """One demo run, from its own directory, on two profiles that fit (they share a system) and one that
    nothing fits."""
    root = tmp_path_factory.mktemp("demo_run")
    tight = root / "tight-board.yaml"
    tight.write_text(NO_FIT_PROFILE)
    out = root / "demo"
    proc = _run("demo", "--checkpoint", str(checkpoint), "--out", str(out), "--profile", "host-x86_64",
                "--profile", "pixel-8", "--profile", str(tight), "--static-host-profile", cwd=root)
    return SimpleNamespace(proc=proc, out=out, tight=tight, cwd=root)


def test_demo_builds_transcribes_and_reports(checkpoint, demo_run):
    proc, out = demo_run.proc, demo_run.out
    summary = json.loads((out / "demo.json").read_text())
    rows = {r["profile"]: r for r in summary["profiles"]}
    assert [r["profile"] for r in summary["profiles"]] == ["host-x86_64", "pixel-8", "tight-board"]

    # Bundles for the two profiles that fit; they load in the runtime.
    for name in ("host-x86_64", "pixel-8"):
        bundle = Bundle.open(out / name)
        assert bundle.subnet == rows[name]["subnet"] and rows[name]["status"] == "built"
        assert rows[name]["pte_bytes"] == bundle.pte_bytes and rows[name]["compression"] > 1
        assert rows[name]["wer"] == 0.0  # the catalog's WER on the clip the model learned
    assert not (out / "tight-board").exists()
    assert rows["tight-board"]["status"] == "no fit" and "max_model_mib" in rows["tight-board"]["error"]
    assert "| no fit |" in _table_row(proc.stdout, "tight-board")
    assert "tight-board (no fit): no system fits" in proc.stdout

    # This machine's bundle (host-x86_64 on an x86-64 Linux host) transcribed the clip like the eager model.
    measured = summary["measured_here"]
    host = match_host_profile([load_profile("host-x86_64"), load_profile("pixel-8")], device_info())
    timed = host.name if host is not None else "host-x86_64"  # no match: the first built bundle is timed
    assert Path(measured["bundle"]) == out / timed and measured["profile"] == (host and host.name)
    assert measured["transcript"] == _eager_transcript(checkpoint, rows[timed]["subnet"]) == SAMPLE_TEXT
    assert SAMPLE_TEXT in proc.stdout

    # Measured here for this machine's row only, predicted (with its source) for the others.
    if host is not None:
        assert rows[host.name]["latency_kind"] == "measured here"
        assert rows[host.name]["latency_ms"] == measured["p50_ms"] > 0
        assert "measured here" in _table_row(proc.stdout, host.name)
    assert rows["pixel-8"]["latency_kind"] == "predicted" and rows["pixel-8"]["latency_ms"] > 0
    assert "predicted (published figures" in _table_row(proc.stdout, "pixel-8")
    assert "measured" not in _table_row(proc.stdout, "pixel-8")

    # The runtime's own report of the timed bundle; the same table in demo.md.
    report = load_report(out / "report" / "report.json")
    assert report["bundle"]["path"] == str(out / timed) and report["transcript"] == SAMPLE_TEXT
    assert (out / "report" / "report.md").is_file()
    assert _table_row(proc.stdout, "pixel-8") in (out / "demo.md").read_text()


def _what_next(stdout: str) -> list[str]:
    """The commands printed under "What next:" (indented four spaces; the steps' descriptions two)."""
    block = stdout.split("\nWhat next:\n", 1)[1]
    return [line[4:] for line in block.splitlines() if line.startswith("    ")]


def test_demo_log_says_what_happens_once(checkpoint, demo_run):
    proc, out = demo_run.proc, demo_run.out
    log = proc.stderr.replace("\r", "\n")  # the progress bar redraws its line with carriage returns
    systems = {json.loads((out / p / "manifest.json").read_text())["model"]["subnet"]["id"]
               for p in ("host-x86_64", "pixel-8")}

    # One verification per distinct system, recorded in every bundle that shares the program.
    verified = re.findall(r"INFO allinone\.build: verify: (\S+) on ", log)
    assert sorted(verified) == sorted(systems), log
    checks = [json.loads((out / p / "manifest.json").read_text())["verification"] for p in ("host-x86_64", "pixel-8")]
    if len(systems) == 1:  # the tiny catalog gives both profiles the same system
        assert checks[0] == checks[1]

    # Each stage said once per system; progress counts systems, not profiles (no per-profile rate or ETA).
    assert log.count("INFO allinone.build: select: ") == 1 and log.count("INFO allinone.demo: time: ") == 1
    assert len(re.findall(r"INFO allinone\.build: bundle: ", log)) == len(systems)
    assert f"lower: {len(systems)}/{len(systems)} systems" in log and "profile/s" not in log

    # No ExecuTorch chatter (a "[file.cpp:line]" line) and no per-layer quantization lines, one summary at most.
    assert not re.search(r"\[\w+\.cpp:\d+\]|cpuinfo|midr", log + proc.stdout), log
    assert len(re.findall(r"\d+-bit: \d+ linear layers quantized", log)) <= len(systems)
    assert "stays float" not in log

    # Every "what next" command runs as printed, in order, from the directory the demo ran in.
    commands = _what_next(proc.stdout)
    assert len(commands) >= 3 and any(" transcribe " in c for c in commands) and any(" build " in c for c in commands)
    ran = {}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=demo_run.cwd, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{command} -> {done.returncode}\n{done.stderr[-3000:]}"
        ran[command] = done.stdout
    assert SAMPLE_TEXT in next(text for c, text in ran.items() if " transcribe " in c)
    copied = Path(json.loads((out / "demo.json").read_text())["measured_here"]["bundle"]).name
    assert Bundle.open(out.parent / copied).subnet in systems  # built from the copy of the profile run here
    assert json.loads((out / "demo.json").read_text())["what_next"][0]["commands"] == commands[:1]


def test_demo_rerun_replaces_its_own_output(checkpoint, demo_run, tmp_path):
    """A rerun replaces the demo's own output, including what the previous run built and this one does not."""
    out = tmp_path / "demo"
    shutil.copytree(demo_run.out, out)
    (out / "notes.txt").write_text("inside the demo's directory, so the demo's to replace")
    again = _run("demo", "--checkpoint", str(checkpoint), "--out", str(out), "--profile", str(demo_run.tight),
                 check=False)
    assert again.returncode == 3, again.stderr  # no profile got a bundle
    assert sorted(p.name for p in out.iterdir()) == sorted([DEMO_MARKER, "demo.json", "demo.md"])
    assert [r["status"] for r in json.loads((out / "demo.json").read_text())["profiles"]] == ["no fit"]


def test_demo_refuses_a_directory_it_did_not_make(checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    proc = _run("demo", "--checkpoint", str(checkpoint), "--out", str(out), "--profile", "host-x86_64", check=False)
    assert proc.returncode == 2 and "was not made by `allinone demo`" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"] and (out / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("case, message", [
    ("no checkpoint", "no such directory"),
    ("no catalog", "catalog.json: no catalog yet; expected one made by `allinone catalog"),
    ("bad audio", "unreadable audio"),
])
def test_demo_bad_input_is_one_line(checkpoint, tmp_path, case, message):
    args = {"no checkpoint": ["--checkpoint", str(tmp_path / "nowhere")],
            "no catalog": ["--checkpoint", str(ROOT / "tests/fixtures/tiny_overfit")],
            "bad audio": ["--checkpoint", str(checkpoint), "--audio", str(ROOT / "README.md")]}[case]
    proc = _run("demo", *args, "--out", str(tmp_path / "out"), "--profile", "host-x86_64", check=False)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_host_matching_follows_the_calibration_rule():
    profiles = [load_profile("pixel-8"), load_profile("host-x86_64"), load_profile("raspberry-pi-5")]
    assert match_host_profile(profiles, {"machine": "x86_64", "system": "Linux 6.1.0"}).name == "host-x86_64"
    assert match_host_profile(profiles, {"machine": "aarch64", "system": "Linux 6.6.31+rpt"}).name == "raspberry-pi-5"
    assert match_host_profile(profiles, {"machine": "aarch64", "system": "Linux 5.10.107-android13"}).name == "pixel-8"
    assert match_host_profile(profiles, {"machine": "riscv64", "system": "Linux 6.1.0"}) is None


def test_quantization_logs_one_summary_line_and_each_layer_at_debug(caplog):
    ckpt = load_checkpoint(ROOT / "tests/fixtures/tiny_overfit")
    subnet = ckpt.model.extract_subnet(SubnetSpec.from_id("d2-f128-h2-w4"))
    with caplog.at_level(logging.DEBUG, logger="allinone.quantize"):
        left_float = quantize_subnet_(subnet, 4)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(info) == 1 and f"{len(left_float)} layers stay float" in info[0] and "depthwise convolution" in info[0]
    assert sorted(line.split()[2] for line in debug) == sorted(left_float)  # "4-bit: layer NAME stays float (...)"


CHATTER_PROBE = """
import logging, sys
logging.basicConfig(level=logging.DEBUG if sys.argv[1] == "verbose" else logging.INFO, format="%(levelname)s %(message)s")
from allinone_runtime.engine import Engine, set_threads, thread_count
from allinone_runtime.errors import RuntimeInputError
set_threads(thread_count() + 1)  # a resize, which ExecuTorch logs
try:
    Engine(sys.argv[2])
except RuntimeInputError as err:
    print(err)
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_executorch_chatter_only_at_debug_its_errors_always(tmp_path, mode):
    """The thread pool's start-up and resize lines go to the debug log (shown by --verbose); an error ExecuTorch
    prints while loading a program still reaches stderr."""
    garbage = tmp_path / "model.pte"
    garbage.write_bytes(b"not a program" * 100)
    proc = subprocess.run([sys.executable, "-c", CHATTER_PROBE, mode, str(garbage)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "could not load the program" in proc.stdout, proc.stderr
    assert re.search(r"^\[program\.cpp:\d+\] Program identifier", proc.stderr, re.M), proc.stderr
    pool_lines = re.findall(r"^(.*)\[threadpool\.cpp:\d+\] Resetting threadpool", proc.stderr, re.M)
    assert pool_lines == (["DEBUG executorch: "] if mode == "verbose" else []), proc.stderr
    if mode == "quiet":
        assert "cpuinfo" not in proc.stderr and "midr" not in proc.stderr, proc.stderr
