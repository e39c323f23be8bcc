"""allinone_runtime on real bundles: checks that refuse broken bundles, transcription (identical to the eager model
on real speech, with word times), bad audio, long audio in chunks, the latency report and the CLIs."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from allinone_runtime import Bundle, RuntimeInputError, Transcriber, validate_report
from allinone_runtime.device import CPUINFO_ENV, ISA_FEATURES, cpu_model_from_cpuinfo, device_info, isa_features
from allinone_runtime.timing import bench
from allinone_runtime.bundle import check_executorch_compat
from allinone_runtime.report import merge_reports, report_markdown, write_report

SAMPLE = Path(str(importlib.resources.files("allinone") / "assets" / "sample.wav"))
SPECS = {"w32": "d2-f128-h2-w32", "w4": "d1-f64-h1-w4"}
TRAIN_STEPS = 30  # on the shipped clip at lr 5e-3: enough for the tiny model to spell it out (CTC loss < 0.2)
CPUINFO = Path(__file__).parent / "fixtures" / "cpuinfo"  # /proc/cpuinfo texts of real machines
# The CPU each device record names (both runtimes): arm64 kernels print no model name, only each core's
# implementer and part, so big.LITTLE layouts list every core type with its count; an unknown pair stays raw.
CPUINFO_CPUS = {
    "raspberry-pi-5.txt": "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)",
    "pixel-6-tensor-g1.txt": "4x Cortex-A55 + 2x Cortex-A76 + 2x Cortex-X1",
    "snapdragon-855.txt": "4x implementer 0x51 part 0x805 + 4x implementer 0x51 part 0x804 "
                          "(Qualcomm Technologies, Inc SM8150)",  # Kryo 485: Qualcomm's own part numbers
    "x86-64-xeon-2-cores.txt": "Intel(R) Xeon(R) Processor",
}
# Texts no fixture covers: a part without an implementer line, an Arm part the table lacks, a 32-bit kernel's
# board-only text, nothing at all.
CPUINFO_EDGE_CASES = {
    "processor\t: 0\nCPU part\t: 0xd03\n": "1x implementer ? part 0xd03",
    "CPU implementer\t: 0x41\nCPU part\t: 0xfff\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n":
        "1x implementer 0x41 part 0xfff + 1x Neoverse-V2",
    "Processor\t: ARMv6-compatible processor rev 7 (v6l)\nHardware\t: BCM2835\n": "BCM2835",
    "": "",
}


def build_runtime_bundles(base: Path) -> dict:
    """A tiny checkpoint trained until it emits characters, its float and 4-bit bundles, and the eager model's
    transcripts of the shipped clip. Built once per test session (both runtime test modules use it)."""
    root = base / "runtime_bundles"
    done = root / "built.json"
    if done.is_file():
        return json.loads(done.read_text())
    import torch

    from allinone.build import export_bundle
    from allinone.checkpoint import load_checkpoint
    from allinone.export import WaveformToLogProbs
    from allinone.quantize import quantize_subnet_
    from allinone.spec import SubnetSpec
    from allinone.train.recipe import load_recipe
    from allinone.train.trainer import train

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # The model overfits the shipped clip: quick, and its transcript is real text rather than all blanks.
    text = SAMPLE.with_suffix(".txt").read_text().strip()
    line = json.dumps({"audio_filepath": str(SAMPLE), "text": text, "duration": sf.info(str(SAMPLE)).duration})
    (root / "train.jsonl").write_text((line + "\n") * 4)
    (root / "dev.jsonl").write_text(line + "\n")
    recipe = dataclasses.replace(load_recipe("tiny"), lr=5e-3, warmup_steps=5)
    train(recipe, root / "train.jsonl", root / "dev.jsonl", root / "ckpt", max_steps=TRAIN_STEPS, progress=False)
    ckpt = load_checkpoint(root / "ckpt")
    waveform = torch.from_numpy(sf.read(str(SAMPLE), dtype="float32")[0])[None]  # (1, N), what the runtime reads
    built = {"checkpoint": str(root / "ckpt")}
    for name, spec_id in SPECS.items():
        spec = SubnetSpec.from_id(spec_id)
        export_bundle(ckpt, spec, root / name, force=True)
        subnet = ckpt.model.extract_subnet(spec)
        quantize_subnet_(subnet, spec.weight_bits)
        with torch.no_grad():
            log_probs = WaveformToLogProbs(subnet).eval()(waveform)  # (1, T, V)
        eager = ckpt.tokenizer().decode_ctc(log_probs[0].argmax(-1).tolist())
        built[name] = {"bundle": str(root / name), "eager": eager}
    done.write_text(json.dumps(built))
    return built


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return build_runtime_bundles(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def w4(built) -> Transcriber:
    return Transcriber(built["w4"]["bundle"], threads=1)


def _copy_bundle(built, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built["w4"]["bundle"], tmp_path / "bundle"))


# --- transcripts ---

@pytest.mark.parametrize("name", ["w32", "w4"])
def test_transcript_identical_to_eager_model_on_real_speech(built, name):
    result = Transcriber(built[name]["bundle"], threads=1).transcribe(SAMPLE)
    assert result.text == built[name]["eager"]
    assert len(result.text.split()) >= 8, result.text  # the trained model spells real words, not blanks
    assert not result.resampled and not result.silent and result.chunks == 1


def test_words_carry_times_from_the_ctc_alignment(w4):
    result = w4.transcribe(SAMPLE)
    assert [w.word for w in result.words] == result.text.split()
    for word, following in zip(result.words, result.words[1:]):
        assert 0 <= word.start_s < word.end_s <= following.start_s
    assert result.words[-1].end_s <= result.audio_s + 0.04
    assert result.words[0].start_s < 1.0 and result.words[-1].end_s > result.audio_s - 1.5  # speech spans the clip
    assert result.timings["inference_ms"] > 0 and result.timings["rtf"] > 0


def test_array_input_int16_and_channels_last(w4):
    audio, rate = sf.read(str(SAMPLE), dtype="int16")
    expected = w4.transcribe(SAMPLE).text
    assert w4.transcribe(audio, rate).text == expected
    stereo = np.stack([audio, audio], axis=1)  # (N, 2)
    result = w4.transcribe(stereo, rate)
    assert result.text == expected and result.source_channels == 2


# --- bad audio ---

def test_stereo_file_is_mixed_down(w4, tmp_path):
    audio, rate = sf.read(str(SAMPLE), dtype="int16")
    sf.write(tmp_path / "stereo.wav", np.stack([audio, audio], axis=1), rate, subtype="PCM_16")
    result = w4.transcribe(tmp_path / "stereo.wav")
    assert result.source_channels == 2 and result.text == w4.transcribe(SAMPLE).text


def test_other_sample_rates_are_resampled_and_said_so(w4, tmp_path):
    from scipy.signal import resample_poly

    audio, rate = sf.read(str(SAMPLE), dtype="float32")
    sf.write(tmp_path / "48k.wav", resample_poly(audio, 3, 1), 48000, subtype="FLOAT")
    result = w4.transcribe(tmp_path / "48k.wav")
    assert result.resampled and result.source_sample_rate == 48000
    assert result.text == w4.transcribe(SAMPLE).text  # downsampling keeps the whole speech band
    sf.write(tmp_path / "8k.wav", resample_poly(audio, 1, 2), 8000, subtype="PCM_16")
    result = w4.transcribe(tmp_path / "8k.wav")
    # Telephone audio lacks the 4-8 kHz band the model saw in training: text, but not necessarily the same.
    assert result.resampled and result.source_sample_rate == 8000 and result.text
    assert abs(result.audio_s - len(audio) / rate) < 0.01


def test_resampling_is_band_limited_and_keeps_amplitude():
    from allinone_runtime.audio import resample

    t8, t16 = np.arange(8000) / 8000, np.arange(16000) / 16000
    up = resample(np.sin(2 * np.pi * 1000 * t8), 8000, 16000)
    assert len(up) == 16000 and np.abs(up - np.sin(2 * np.pi * 1000 * t16))[200:-200].max() < 1e-4  # ends: filter edge
    down = resample(np.sin(2 * np.pi * 1000 * t16) + np.sin(2 * np.pi * 6000 * t16), 16000, 8000)
    # 6 kHz is above 8 kHz's Nyquist: removed
    assert len(down) == 8000 and np.abs(down - np.sin(2 * np.pi * 1000 * t8))[100:-100].max() < 1e-4


def test_long_files_are_read_in_blocks_like_one_array(tmp_path):
    from allinone_runtime.audio import BLOCK_S, prepare_audio, read_audio

    rate = 44100
    noise = (np.random.default_rng(0).standard_normal(rate * (2 * BLOCK_S + 3)) * 0.1).astype(np.float32)  # 3 blocks
    sf.write(tmp_path / "long.wav", np.stack([noise, -0.5 * noise], axis=1), rate, subtype="FLOAT")
    streamed = read_audio(tmp_path / "long.wav", 16000)
    whole = prepare_audio(np.stack([noise, -0.5 * noise], axis=1), rate, 16000)
    assert streamed.source_channels == 2 and len(streamed.samples) == len(whole.samples) == 16000 * (2 * BLOCK_S + 3)
    assert np.array_equal(streamed.samples, whole.samples)  # block boundaries leave no trace


def test_silence_gives_empty_text(w4, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(32000, np.int16), 16000, subtype="PCM_16")
    result = w4.transcribe(tmp_path / "silence.wav")
    assert result.text == "" and result.words == [] and result.silent


def test_short_audio_is_padded(w4):
    audio = sf.read(str(SAMPLE), dtype="float32")[0][:4800]  # 0.3 s, under the program's 0.5 s minimum
    result = w4.transcribe(audio)
    assert result.chunks == 1 and result.audio_s == pytest.approx(0.3)


def test_audio_longer_than_30s_is_transcribed_in_overlapping_chunks(w4, monkeypatch):
    # The overfit test model only spells its one clip where it was trained, so this checks the documented
    # window/seam rule on the program's own outputs; test_runtime_cpp checks the C++ runner merges the same way.
    audio = np.resize(sf.read(str(SAMPLE), dtype="float32")[0], 41 * 16000)  # (656000,) 41 s of speech
    calls, run = [], w4.engine.run
    monkeypatch.setattr(w4.engine, "run", lambda samples: calls.append((samples, run(samples))) or calls[-1][1])
    log_probs, chunks = w4.log_probs(audio)
    # Windows of the program's longest input (479,440 samples: 720 + 748 frames of 640) every 649 frames
    # (the 30 s window less the 4 s overlap, in whole frames); the last window is cut to a length it takes.
    assert w4.bundle.max_samples == 479_440 and w4.bundle.length_step == 640
    assert chunks == 2 and w4.hop == 649 * 640 and w4.overlap == 4 * 16000
    (first, out0), (second, out1) = calls
    rest = 656000 - 649 * 640  # 240,640 samples, cut to 8,400 + 362 x 640 = 240,080
    assert np.array_equal(first, audio[:479_440]) and np.array_equal(second, audio[649 * 640:][:240_080])
    seam = 649 + 50  # the middle of the overlap: 50 frames (2 s) into the second window
    assert np.array_equal(log_probs[:seam], out0[:seam]) and np.array_equal(log_probs[seam:], out1[50:])
    assert len(second) < rest
    assert abs(len(log_probs) - 41 * 25) <= 3  # one frame grid over the whole audio

    result = w4.transcribe(audio)
    assert result.chunks == 2 and result.audio_s == 41 and result.text
    starts = [w.start_s for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end_s <= result.audio_s + 0.04


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.wav", "audio file not found"),
    (lambda d: d, "not a file"),
    (lambda d: (d / "notes.wav").write_text("these are not samples") and d / "notes.wav", "unreadable audio"),
    (lambda d: (d / "cut.wav").write_bytes(SAMPLE.read_bytes()[:30]) and d / "cut.wav", "unreadable audio"),
    (lambda d: sf.write(d / "empty.wav", np.zeros(0, np.int16), 16000) or d / "empty.wav", "empty audio"),
    (lambda d: sf.write(d / "nan.wav", np.array([0.1, np.nan, 0.2] * 8000, np.float32), 16000, subtype="FLOAT")
     or d / "nan.wav", "NaN or infinite"),
])
def test_bad_audio_is_refused_with_one_line(w4, tmp_path, make, message):
    with pytest.raises(RuntimeInputError, match=message) as err:
        w4.transcribe(make(tmp_path))
    assert "\n" not in str(err.value)


def test_infinite_samples_in_an_array_are_refused(w4):
    audio = np.full(16000, 0.1, np.float32)
    audio[8000] = np.inf
    with pytest.raises(RuntimeInputError, match=r"1 NaN or infinite samples \(first at 0.500 s\)"):
        w4.transcribe(audio)


# --- broken bundles ---

def test_flipped_byte_in_model_pte_is_refused(built, tmp_path):
    bundle = _copy_bundle(built, tmp_path)
    data = bytearray((bundle / "model.pte").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.pte").write_bytes(bytes(data))
    with pytest.raises(RuntimeInputError, match=r"model.pte: sha256 .* differs from the manifest's .*corrupted"):
        Bundle.open(bundle)


@pytest.mark.parametrize("edit, message", [
    (lambda b: (b / "manifest.json").unlink(), r"manifest.json: missing; a bundle is model.pte \+ manifest.json"),
    (lambda b: (b / "model.pte").unlink(), r"model.pte: missing"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda b: _edit_manifest(b, format_version=3), "format_version: expected 1 or 2, got 3"),
    (lambda b: _edit_manifest(b, kind="something-else"), "kind: expected 'allinone-bundle'"),
    (lambda b: _edit_manifest(b, io=None), "io.output.blank_id: missing; the runtime needs it"),
    (lambda b: _edit_manifest(b, versions={"executorch": "9.1.0"}), "built with executorch 9.1.0, but the installed"),
])
def test_broken_bundle_is_refused_with_one_line(built, tmp_path, edit, message):
    bundle = _copy_bundle(built, tmp_path)
    edit(bundle)
    with pytest.raises(RuntimeInputError, match=message) as err:
        Bundle.open(bundle)
    assert "\n" not in str(err.value)


def _edit_manifest(bundle: Path, **changes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_each_call_takes_the_audio_cut_to_the_frame_grid(built, w4, monkeypatch, tmp_path):
    """Format 2: the program takes 8,400 + 640 k samples; the runtime cuts the tail no output frame reads, so
    the log-probs equal the format-1 reading of the same program, which fed the whole clip."""
    b = w4.bundle
    assert (b.min_samples, b.max_samples, b.length_step) == (8400, 479_440, 640)
    audio = sf.read(str(SAMPLE), dtype="float32")[0]
    cut = 8400 + (len(audio) - 8400) // 640 * 640
    assert cut < len(audio)
    calls, run = [], w4.engine.run
    monkeypatch.setattr(w4.engine, "run", lambda samples: calls.append(len(samples)) or run(samples))
    on_grid, _ = w4.log_probs(audio)
    assert calls == [cut]
    old = _copy_bundle(built, tmp_path)  # the same program read as a format-1 bundle: any length, fed whole
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["io"]["input"]["length_step"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    whole = Transcriber(old)
    assert whole.bundle.length_step == 1
    assert np.array_equal(whole.log_probs(audio)[0], on_grid)


@pytest.mark.parametrize("step, message", [(None, "io.input.length_step: missing"),
                                           (0, "length_step: expected >= 1"), (641, "dividing max_samples")])
def test_a_bad_length_step_is_refused(built, tmp_path, step, message):
    bundle = _copy_bundle(built, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if step is None:
        del manifest["io"]["input"]["length_step"]
    else:
        manifest["io"]["input"]["length_step"] = step
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeInputError, match=message):
        Bundle.open(bundle)


def test_executorch_compatibility_rule():
    assert check_executorch_compat("1.5.1", "1.5.0") == "guaranteed"  # patch releases keep the format
    assert check_executorch_compat("1.5.1", "1.6.2") == "guaranteed"  # the next non-patch release
    assert check_executorch_compat("1.9.0", "2.0.0") == "guaranteed"
    assert check_executorch_compat("1.3.0", "1.5.1") == "not guaranteed"  # allowed, with a warning
    with pytest.raises(RuntimeInputError, match="no forward compatibility"):
        check_executorch_compat("1.6.0", "1.5.1")
    with pytest.raises(RuntimeInputError, match="expected an ExecuTorch version"):
        check_executorch_compat("latest", "1.5.1")


# --- device record ---

@pytest.mark.parametrize("fixture, cpu", CPUINFO_CPUS.items())
def test_cpu_named_from_real_cpuinfo_texts(fixture, cpu):
    assert cpu_model_from_cpuinfo((CPUINFO / fixture).read_text()) == cpu


@pytest.mark.parametrize("text, cpu", CPUINFO_EDGE_CASES.items())
def test_cpu_named_from_partial_cpuinfo_texts(text, cpu):
    assert cpu_model_from_cpuinfo(text) == cpu


def test_device_record_reads_the_cpuinfo_named_by_the_environment(monkeypatch):
    monkeypatch.setenv(CPUINFO_ENV, str(CPUINFO / "pixel-6-tensor-g1.txt"))
    assert device_info()["cpu"] == "4x Cortex-A55 + 2x Cortex-A76 + 2x Cortex-X1"
    assert isa_features("aarch64") == ["asimd", "asimdhp", "asimddp"]  # Armv8.2: dotprod, no i8mm
    monkeypatch.setenv(CPUINFO_ENV, str(CPUINFO / "x86-64-xeon-2-cores.txt"))
    assert isa_features("x86_64") == list(ISA_FEATURES["x86_64"])  # Sapphire Rapids has all of them


# --- latency report ---

@pytest.fixture(scope="module")
def report(built) -> dict:
    return bench(built["w4"]["bundle"], lengths_s=(1, 2), runs=3, threads=1, etdump=True, audio=SAMPLE)


def test_bench_report_validates_and_is_written(report, built, tmp_path):
    assert validate_report(report) is report
    assert report["runner"] == "python" and report["measured"] is True and report["threads"] == 1
    # format 2: the CPU features that decide kernel choice, as this machine's /proc/cpuinfo lists them
    flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.split(":")[0].strip() in ("flags", "Features"))
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    assert report["format_version"] == 3 and report["device"]["isa"] == [f for f in ISA_FEATURES[arch] if f in flags]
    assert [row["audio_s"] for row in report["latency"]] == [1, 2]
    # format 3: each call's decoding timed apart from the network, by the bundle's default decoder (greedy here)
    decoding = report["decoding"]
    assert decoding["decoder"] == "greedy" and decoding["beam"] is None and decoding["lm_bytes"] is None
    assert [row["audio_s"] for row in decoding["latency"]] == [1, 2]
    assert all(0 <= row["p50_ms"] <= row["p90_ms"] for row in decoding["latency"])
    assert report["bundle"]["pte_bytes"] == Path(built["w4"]["bundle"], "model.pte").stat().st_size
    assert report["transcript"] == built["w4"]["eager"]
    assert report["peak_rss_bytes"] > report["rss_before_load_bytes"] > 0
    ops = report["operators"]  # ETDump through the devtools Inspector
    assert any(op["delegated"] for op in ops) and any(not op["delegated"] for op in ops)
    assert any("Fully Connected" in op["name"] for op in ops)
    write_report(report, tmp_path / "bench")
    assert validate_report(json.loads((tmp_path / "bench" / "report.json").read_text())) == report
    assert "| audio s | p50 ms |" in (tmp_path / "bench" / "report.md").read_text()
    assert "## Network and decoding (greedy CTC decoding)" in (tmp_path / "bench" / "report.md").read_text()
    assert (tmp_path / "bench" / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_merges_many_bundles(report, tmp_path):
    write_report(report, tmp_path / "dist" / "phone" / "bench")
    other = json.loads(json.dumps(report))
    other["threads"], other["bundle"]["subnet"] = 2, "d2-f128-h2-w8"
    write_report(other, tmp_path / "dist" / "pi" / "bench")
    rows, md = merge_reports(tmp_path / "dist")
    assert [label for label, _ in rows] == ["phone/bench", "pi/bench"]
    table = md.read_text()
    assert "d2-f128-h2-w8" in table and "p50 ms @2s" in table
    assert (tmp_path / "dist" / "comparison.png").is_file()
    assert len(json.loads((tmp_path / "dist" / "comparison.json").read_text())["reports"]) == 2


def test_format_1_report_without_isa_still_validates(report):
    old = json.loads(json.dumps(report))
    old["format_version"] = 1
    del old["device"]["isa"]
    del old["decoding"]
    assert validate_report(old) is old


def test_format_2_report_without_decoding_still_validates(report):
    old = json.loads(json.dumps(report))
    old["format_version"] = 2
    del old["decoding"]
    assert validate_report(old) is old
    assert "## Network and decoding" not in report_markdown(old)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("load_ms"), "load_ms: missing"),
    (lambda r: r.update(latncy=[]), "latncy: unknown key; did you mean latency?"),
    (lambda r: r["latency"][0].update(p90_ms=-1.0), r"latency\[0\]: expected 0 <= min_ms <= p50_ms <= p90_ms"),
    (lambda r: r["latency"][1].update(rtf=0.5), r"latency\[1\].rtf: 0.5 is not p50_ms / audio duration"),
    (lambda r: r.update(runner="java"), "runner: expected 'python' or 'cpp'"),
    (lambda r: r.update(measured=False), "measured: expected true"),
    (lambda r: r["device"].update(cores="two"), "device.cores: expected an integer"),
    (lambda r: r.update(format_version=4), "format_version: expected 1, 2 or 3, got 4"),
    (lambda r: r.pop("decoding"), "decoding: missing"),
    (lambda r: r.update(format_version=2), "decoding: unknown key"),  # format 2 had no decoding
    (lambda r: r["decoding"].update(decoder="viterbi"), "decoding.decoder: expected 'greedy' or 'ctc_prefix_beam'"),
    (lambda r: r["decoding"].update(beam=8), "decoding.beam: expected null for decoder 'greedy'"),
    (lambda r: r["decoding"].update(decoder="ctc_prefix_beam"), "decoding.beam: expected a number for decoder"),
    (lambda r: r["decoding"]["latency"].pop(), r"decoding.latency: expected one row per length of latency \(1, 2 s\)"),
    (lambda r: r["decoding"]["latency"][1].update(min_ms=1e9), r"decoding.latency\[1\]: expected 0 <= min_ms"),
    (lambda r: r["device"].pop("isa"), "device.isa: missing"),
    (lambda r: r["device"].update(isa="avx2"), "device.isa: expected a list"),
    (lambda r: r["device"].update(isa=["avx512vnni"]), r"device.isa\[0\]: unknown CPU feature 'avx512vnni'; did "
                                                        r"you mean avx512_vnni\?"),
    (lambda r: r["device"].update(isa=["avx2", "avx2"]), "device.isa: expected distinct feature names"),
    (lambda r: (r.pop("decoding"), r.update(format_version=1)), "device.isa: unknown key"),  # format 1 had no isa
])
def test_invalid_reports_are_refused(report, edit, message):
    bad = json.loads(json.dumps(report))
    edit(bad)
    with pytest.raises(RuntimeInputError, match=message):
        validate_report(bad)


# --- command lines ---

def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


def test_cli_transcribe_json_with_word_times(built, tmp_path):
    sf.write(tmp_path / "8k.wav", sf.read(str(SAMPLE), dtype="float32")[0][::2], 8000)
    done = _run("-m", "allinone.cli", "transcribe", built["w4"]["bundle"], str(SAMPLE), str(tmp_path / "8k.wav"),
                str(tmp_path / "missing.wav"), "--json")
    assert done.returncode == 2  # one file was bad; the others were still transcribed
    assert f"error: {tmp_path / 'missing.wav'}: audio file not found" in done.stderr
    out = json.loads(done.stdout)
    first, second, third = out["results"]
    assert third["error"].endswith("missing.wav: audio file not found")
    assert first["text"] == built["w4"]["eager"] and first["words"][0].keys() == {"word", "start_s", "end_s"}
    assert second["resampled"] and "resampled from 8000 Hz to 16000 Hz" in second["notes"]


def test_cli_refuses_truncated_audio_and_warns_on_audio_beyond_full_scale(built, tmp_path):
    speech = sf.read(str(SAMPLE), dtype="float32")[0]
    sf.write(tmp_path / "cut.wav", speech, 16000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[:44 + 1024])  # header still says 4 s
    sf.write(tmp_path / "loud.wav", speech * 1000, 16000, subtype="FLOAT")
    for prog in (["-m", "allinone.cli"], ["-m", "allinone_runtime"]):
        done = _run(*prog, "transcribe", built["w4"]["bundle"], str(tmp_path / "cut.wav"), str(tmp_path / "loud.wav"))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert (f"{prog[1].split('.')[0]}: error: {tmp_path / 'cut.wav'}: truncated WAV: the header promises 64836 "
                f"frames (4.05 s), the file holds 512 (0.03 s); expected a complete audio file") in done.stderr
        assert f"{tmp_path / 'loud.wav'}: peak " in done.stderr and "beyond full scale" in done.stderr
        assert done.stdout.startswith(f"{tmp_path / 'loud.wav'}: ")  # transcribed as given, with the warning


def test_cli_bench_and_report(built, tmp_path):
    out = tmp_path / "dist" / "w4"
    done = _run("-m", "allinone.cli", "bench", built["w4"]["bundle"], "--lengths", "1,2", "--runs", "2",
                "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = validate_report(json.loads((out / "report.json").read_text()))
    assert report["transcript"] == built["w4"]["eager"]  # the CLI benches the shipped speech clip
    done = _run("-m", "allinone.cli", "report", str(tmp_path / "dist"))
    assert done.returncode == 0 and "d1-f64-h1-w4" in done.stdout


def test_cli_errors_are_one_line(built, tmp_path):
    bundle = _copy_bundle(built, tmp_path)
    _edit_manifest(bundle, format_version=7)
    for prog in (["-m", "allinone.cli"], ["-m", "allinone_runtime"]):
        done = _run(*prog, "transcribe", str(bundle), str(SAMPLE))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"{prog[1].split('.')[0]}: error: {bundle / 'manifest.json'}: "
                                                    f"format_version: expected 1 or 2, got 7; this runtime reads "
                                                    f"bundle formats 1 or 2 only"]
    done = _run("-m", "allinone_runtime", "bench", built["w4"]["bundle"], "--lengths", "1,45", "--out", str(tmp_path))
    assert done.returncode == 2 and "--lengths: 45 s is outside the program's range 0.525-29.965 s" in done.stderr
