"""The native runner (runtime/cpp), built against the executorch wheel's CMake package: same transcripts as
the Python runtime and the eager model, the same report format, the same refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from allinone_runtime import Transcriber, validate_report
from allinone_runtime.cpp import build_runner, run_runner
from allinone_runtime.device import CPUINFO_ENV, device_info
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.operators import operator_breakdown
from test_runtime import CPUINFO, CPUINFO_CPUS, CPUINFO_EDGE_CASES, SAMPLE, build_runtime_bundles


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return build_runtime_bundles(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    """Configured and built once per module (~20 s on 2 cores)."""
    binary = build_runner(tmp_path_factory.mktemp("cpp-build"))
    assert binary.is_file()
    return binary


@pytest.mark.parametrize("name", ["w32", "w4"])
def test_cpp_python_and_eager_transcripts_identical_on_real_speech(built, runner, name):
    cpp, _ = run_runner(runner, built[name]["bundle"], SAMPLE, threads=1, transcribe_only=True)
    python = Transcriber(built[name]["bundle"], threads=1).transcribe(SAMPLE).text
    assert cpp == python == built[name]["eager"]
    assert len(cpp.split()) >= 8, cpp


def test_cpp_merges_long_audio_like_python(built, runner, tmp_path):
    audio = np.resize(sf.read(str(SAMPLE), dtype="float32")[0], 41 * 16000)  # two windows
    sf.write(tmp_path / "long.wav", audio, 16000, subtype="FLOAT")
    cpp, _ = run_runner(runner, built["w4"]["bundle"], tmp_path / "long.wav", threads=1, transcribe_only=True)
    python = Transcriber(built["w4"]["bundle"], threads=1).transcribe(audio)
    assert python.chunks == 2 and cpp == python.text


def test_cpp_silence_and_short_audio(built, runner, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    assert run_runner(runner, built["w4"]["bundle"], tmp_path / "silence.wav", transcribe_only=True)[0] == ""
    short = sf.read(str(SAMPLE), dtype="int16")[0][:4800]  # 0.3 s: padded to the program's 0.5 s
    sf.write(tmp_path / "short.wav", short, 16000, subtype="PCM_16")
    cpp, _ = run_runner(runner, built["w4"]["bundle"], tmp_path / "short.wav", threads=1, transcribe_only=True)
    assert cpp == Transcriber(built["w4"]["bundle"], threads=1).transcribe(short).text


def test_cpp_report_validates_with_operators_from_etdump(built, runner, tmp_path):
    transcript, report = run_runner(runner, built["w4"]["bundle"], SAMPLE, lengths_s=(1, 2), runs=3, threads=1,
                                    out_dir=tmp_path / "cpp", etdump=tmp_path / "run.etdp")
    assert validate_report(report) and report["runner"] == "cpp" and report["threads"] == 1
    assert report["device"] == device_info()  # the same device record as Python's, CPU features (isa) included
    assert [row["audio_s"] for row in report["latency"]] == [1, 2]
    assert report["format_version"] == 3 and report["decoding"]["decoder"] == "greedy"  # as the Python bench writes
    assert [row["audio_s"] for row in report["decoding"]["latency"]] == [1, 2]
    assert report["transcript"] == transcript == built["w4"]["eager"]
    manifest = json.loads(Path(built["w4"]["bundle"], "manifest.json").read_text())
    assert report["bundle"]["pte_sha256"] == manifest["pte"]["sha256"]  # the runner's own SHA-256
    assert report["bundle"]["macs_per_second"] == manifest["model"]["macs_per_second"]
    ops = operator_breakdown(tmp_path / "run.etdp")  # the C++ ETDump reads with the same Inspector
    assert any(op["delegated"] and "Fully Connected" in op["name"] for op in ops)


CPUINFO_TEXTS = [*(((CPUINFO / name).read_text(), cpu) for name, cpu in CPUINFO_CPUS.items()),
                 *CPUINFO_EDGE_CASES.items()]


@pytest.mark.parametrize("text, cpu", CPUINFO_TEXTS, ids=[*CPUINFO_CPUS, *map(repr, CPUINFO_EDGE_CASES)])
def test_cpp_and_python_device_records_alike_from_real_cpuinfo_texts(runner, tmp_path, monkeypatch, text, cpu):
    """--device-info prints the record a report would carry; both runtimes read $ALLINONE_CPUINFO."""
    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setenv(CPUINFO_ENV, str(tmp_path / "cpuinfo"))
    done = subprocess.run([str(runner), "--device-info"], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == device_info()
    assert device_info()["cpu"] == (cpu or "unknown")  # a text that names no CPU: "unknown" from both


@pytest.mark.parametrize("edit, message", [
    ("flip", "sha256 .* differs from the manifest's"),
    ("no_manifest", r"manifest.json: missing"),
    ("version", "format_version: expected 1 or 2"),
    ("newer", "built with executorch 9.0.0, but this runner links executorch"),
])
def test_cpp_refuses_broken_bundles(built, runner, tmp_path, edit, message):
    bundle = Path(shutil.copytree(built["w4"]["bundle"], tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    if edit == "flip":
        data = bytearray((bundle / "model.pte").read_bytes())
        data[100] ^= 0x80
        (bundle / "model.pte").write_bytes(bytes(data))
    elif edit == "no_manifest":
        (bundle / "manifest.json").unlink()
    else:
        manifest.update(format_version=3) if edit == "version" else manifest["versions"].update(executorch="9.0.0")
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeInputError, match=message):
        run_runner(runner, bundle, SAMPLE, transcribe_only=True)


@pytest.mark.parametrize("write, message", [
    (lambda p: sf.write(p, np.zeros(8000, np.int16), 8000), "8000 Hz; this runner takes 16000 Hz"),
    (lambda p: Path(p).write_text("not audio"), "not a WAV file"),
    (lambda p: sf.write(p, np.zeros(0, np.int16), 16000), "empty audio"),
    (lambda p: sf.write(p, np.array([0.1, np.nan] * 8000, np.float32), 16000, subtype="FLOAT"), "NaN or infinite"),
    (lambda p: (sf.write(p, np.zeros(64000, np.int16), 16000), Path(p).write_bytes(Path(p).read_bytes()[:44 + 1024])),
     "truncated WAV: the header promises 64000 frames, the file holds 512"),
])
def test_cpp_refuses_bad_audio(built, runner, tmp_path, write, message):
    write(tmp_path / "bad.wav")
    with pytest.raises(RuntimeInputError, match=message):
        run_runner(runner, built["w4"]["bundle"], tmp_path / "bad.wav", transcribe_only=True)


def test_cpp_stereo_and_24bit_wav(built, runner, tmp_path):
    audio = sf.read(str(SAMPLE), dtype="float32")[0]
    sf.write(tmp_path / "stereo24.wav", np.stack([audio, audio], axis=1), 16000, subtype="PCM_24")
    cpp, _ = run_runner(runner, built["w4"]["bundle"], tmp_path / "stereo24.wav", threads=1, transcribe_only=True)
    assert cpp == Transcriber(built["w4"]["bundle"], threads=1).transcribe(tmp_path / "stereo24.wav").text


def test_subword_bundle_at_80ms_frames_reads_the_same_in_cpp_python_and_eager(synth_corpus, runner, tmp_path):
    """A sentencepiece vocabulary ("▁the", "s", ...) at x8 subsampling: both runtimes join pieces into words as
    the SDK does. One training step leaves the weights near their random start, so frames pick many pieces."""
    import dataclasses

    import torch

    from allinone.build import export_bundle
    from allinone.checkpoint import load_checkpoint
    from allinone.export import WaveformToLogProbs
    from allinone.spec import SubnetSpec
    from allinone.train.recipe import load_recipe
    from allinone.train.trainer import train

    recipe = dataclasses.replace(load_recipe("tiny"), units="bpe", bpe_vocab_size=48, subsampling_factor=8)
    train(recipe, synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", tmp_path / "ckpt", max_steps=1,
          progress=False)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    spec = SubnetSpec.from_id("d2-f128-h2-w32")
    export_bundle(ckpt, spec, tmp_path / "bundle", force=True)
    waveform = torch.from_numpy(sf.read(str(SAMPLE), dtype="float32")[0])[None]  # (1, N)
    with torch.no_grad():
        log_probs = WaveformToLogProbs(ckpt.model.extract_subnet(spec)).eval()(waveform)  # (1, T, V)
    eager = ckpt.tokenizer().decode_ctc(log_probs[0].argmax(-1).tolist())
    cpp, _ = run_runner(runner, tmp_path / "bundle", SAMPLE, threads=1, transcribe_only=True)
    python = Transcriber(tmp_path / "bundle", threads=1)
    assert python.bundle.frame_shift_s == pytest.approx(0.08)
    assert cpp == python.transcribe(SAMPLE).text == eager
    assert len(eager.split()) >= 3, eager
