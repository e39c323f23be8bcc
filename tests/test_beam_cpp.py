"""A bundle that carries an LM (`lm attach` / `build --lm`): the Python runtime and the native runner give the same
beam-search transcripts, and both refuse a damaged LM with one line (issue 15)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.bundle_lm import attach_lm
from allinone.lm import build_lm
from allinone_runtime.beam import DecoderOptions
from allinone_runtime.cpp import build_runner
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.transcribe import Transcriber
from test_lm import _TINY_ARPA, ARPA_OUTSIDE_THE_RULES
from test_runtime import SAMPLE, build_runtime_bundles

pytestmark = pytest.mark.slow  # trains and lowers the tiny runtime bundles, builds the runner, TTS corpus

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory, synth_corpus) -> Path:
    """The tiny 4-bit runtime bundle with a trigram LM of the sample's text and the TTS corpus's training text."""
    built = build_runtime_bundles(tmp_path_factory.getbasetemp())
    text = tmp_path_factory.mktemp("lmtext") / "text.txt"
    sentences = [u["text"] for u in read_jsonl(synth_corpus / "train.jsonl")]
    text.write_text("\n".join([SAMPLE.with_suffix(".txt").read_text().strip()] * 3 + sentences) + "\n")
    lm = build_lm([text], 3, tmp_path_factory.mktemp("lm") / "lm").out
    out = tmp_path_factory.mktemp("bundles") / "w4-lm"
    attach_lm(built["w4"]["bundle"], lm, DecoderOptions(beam=8, lm_weight=0.8, word_bonus=2.0, oov_penalty=-20.0),
              out=out)
    return out


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    return build_runner(tmp_path_factory.mktemp("cpp-build"))


def _cpp(runner: Path, bundle: Path, audio: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(runner), str(bundle), str(audio), "--transcribe-only", "--threads", "1", *extra],
                          capture_output=True, text=True, timeout=300)


def _clips(corpus: Path, n: int) -> list[Path]:
    clips = []
    for split in ("test", "dev", "train"):
        clips += [corpus / u["audio_filepath"] for u in read_jsonl(corpus / f"{split}.jsonl")]
    return [SAMPLE] + clips[: n - 1]


def test_manifest_lists_the_lm_and_the_verification(lm_bundle):
    manifest = json.loads((lm_bundle / "manifest.json").read_text())
    decoder = manifest["decoder"]
    assert decoder["type"] == "ctc_prefix_beam" and decoder["defaults"]["lm_weight"] == 0.8
    assert [f["file"] for f in decoder["lm"]["files"]] == ["lm/lm.json", "lm/lm.arpa"]
    assert decoder["lm"]["bytes"] == sum((lm_bundle / f["file"]).stat().st_size for f in decoder["lm"]["files"])
    assert decoder["verification"]["text"] == SAMPLE.with_suffix(".txt").read_text().strip()
    from allinone.package import describe_bundle  # `allinone inspect`: the LM's bytes, per bundle

    assert (f"decoder     ctc_prefix_beam: LM order 3, {decoder['lm']['words']:,} words, {decoder['lm']['bytes']:,} B "
            f"(lm/); beam 8, LM weight 0.8, word bonus 2, OOV penalty -20") in describe_bundle(lm_bundle)


def test_python_and_cpp_beam_transcripts_identical_on_24_clips(lm_bundle, runner, synth_corpus):
    clips = _clips(synth_corpus, 24)
    assert len(clips) == 24
    python = Transcriber(lm_bundle, threads=1)
    greedy = Transcriber(lm_bundle, threads=1, greedy=True)
    differs_from_greedy = 0
    for clip in clips:
        done = _cpp(runner, lm_bundle, clip)
        assert done.returncode == 0, done.stderr
        text = python.transcribe(clip).text
        assert done.stdout.strip() == text, clip
        differs_from_greedy += text != greedy.transcribe(clip).text
    assert differs_from_greedy >= 12  # the LM really decides the words, on most clips
    # overrides reach both decoders the same way
    for extra in (["--beam", "2", "--lm-weight", "0.3"], ["--word-bonus", "-1", "--oov-penalty", "-2"]):
        done = _cpp(runner, lm_bundle, clips[1], *extra)
        keys = dict(zip([a.lstrip("-").replace("-", "_") for a in extra[::2]], map(float, extra[1::2])))
        keys = {k: int(v) if k == "beam" else v for k, v in keys.items()}
        assert done.stdout.strip() == Transcriber(lm_bundle, threads=1, decoder_overrides=keys).transcribe(clips[1]).text


def test_hotwords_agree_and_unknown_characters_are_reported(lm_bundle, runner, tmp_path):
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text("# a contact\nBrowning :3\nzoë\n")
    done = _cpp(runner, lm_bundle, SAMPLE, "--hotwords", str(hotwords))
    assert done.returncode == 0, done.stderr
    assert "zoë" in done.stderr and "skipped" in done.stderr
    from allinone_runtime.beam import read_hotwords

    python = Transcriber(lm_bundle, threads=1, hotwords=read_hotwords(hotwords))
    assert python.decoder.skipped_hotwords == [("zoë", "ë")]
    assert done.stdout.strip() == python.transcribe(SAMPLE).text
    cli = subprocess.run([sys.executable, "-m", "allinone_runtime", "transcribe", str(lm_bundle), str(SAMPLE),
                          "--hotwords", str(hotwords)], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0 and cli.stdout.strip() == done.stdout.strip()
    assert "zoë" in cli.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_lm_in_a_bundle_is_refused_by_both_runtimes(lm_bundle, runner, tmp_path, damage):
    bad = tmp_path / "bundle"
    shutil.copytree(lm_bundle, bad)
    arpa = bad / "lm" / "lm.arpa"
    data = bytearray(arpa.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 1
    arpa.write_bytes(bytes(data))
    with pytest.raises(RuntimeInputError, match="lm.arpa") as err:
        Transcriber(bad)
    assert "\n" not in str(err.value)
    done = _cpp(runner, bad, SAMPLE)
    assert done.returncode == 2 and "lm.arpa" in done.stderr
    assert len([line for line in done.stderr.splitlines() if "error" in line]) == 1
    cli = subprocess.run([sys.executable, "-m", "allinone.cli", "transcribe", str(bad), str(SAMPLE)],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "lm.arpa" in cli.stderr
    # --greedy still works: the model is fine, only the LM is damaged
    assert _cpp(runner, bad, SAMPLE, "--greedy").returncode == 0


def _with_arpa(bundle: Path, out: Path, arpa: str) -> Path:
    """A copy of `bundle` whose LM is `arpa`, with lm.json and the manifest recording its true bytes and sha256
    (so both runtimes get past the checksums and parse it)."""
    shutil.copytree(bundle, out)
    data = arpa.encode()
    (out / "lm" / "lm.arpa").write_bytes(data)
    meta = json.loads((out / "lm" / "lm.json").read_text())
    meta["arpa"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / "lm" / "lm.json").write_text(json.dumps(meta))
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["decoder"]["lm"]["files"]:
        content = (out / entry["file"]).read_bytes()
        entry.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    manifest["decoder"]["lm"]["bytes"] = sum(e["bytes"] for e in manifest["decoder"]["lm"]["files"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_hand_written_arpa_reads_the_same_in_both_runtimes(lm_bundle, runner, tmp_path):
    """Unsorted n-grams, missing back-off fields: the two parsers build the same model (same transcripts)."""
    bundle = _with_arpa(lm_bundle, tmp_path / "tiny", _TINY_ARPA)
    done = _cpp(runner, bundle, SAMPLE, "--oov-penalty", "-1")
    assert done.returncode == 0, done.stderr
    python = Transcriber(bundle, threads=1, decoder_overrides={"oov_penalty": -1.0}).transcribe(SAMPLE).text
    assert done.stdout.strip() == python and python


@pytest.mark.parametrize("damage", sorted(ARPA_OUTSIDE_THE_RULES))
def test_an_arpa_outside_the_back_off_rules_is_refused_by_both_runtimes(lm_bundle, runner, tmp_path, damage):
    import re

    arpa, match = ARPA_OUTSIDE_THE_RULES[damage]
    bundle = _with_arpa(lm_bundle, tmp_path / "bad", arpa)
    with pytest.raises(RuntimeInputError, match=match):
        Transcriber(bundle)
    done = _cpp(runner, bundle, SAMPLE)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 2 and len(errors) == 1 and re.search(match, errors[0]), done.stderr


def test_bench_times_beam_decoding_apart_from_the_network_in_both_runtimes(lm_bundle, runner, tmp_path):
    """report.json format 3: both runtimes time the bundle's beam-search decoder apart from the network."""
    from allinone_runtime.cpp import run_runner
    from allinone_runtime.report import report_markdown
    from allinone_runtime.timing import bench

    decoder = json.loads((lm_bundle / "manifest.json").read_text())["decoder"]
    python = bench(lm_bundle, lengths_s=(1, 2), runs=2, threads=1, audio=SAMPLE)
    _, cpp = run_runner(runner, lm_bundle, SAMPLE, lengths_s=(1, 2), runs=2, threads=1, out_dir=tmp_path / "cpp")
    for report in (python, cpp):
        decoding = report["decoding"]
        assert decoding["decoder"] == "ctc_prefix_beam" and decoding["beam"] == decoder["defaults"]["beam"]
        assert decoding["lm_bytes"] == decoder["lm"]["bytes"] == sum(f["bytes"] for f in decoder["lm"]["files"])
        assert [row["audio_s"] for row in decoding["latency"]] == [row["audio_s"] for row in report["latency"]] == [1, 2]
        assert "## Network and decoding (CTC prefix beam search, beam 8, LM " in report_markdown(report)
    # the transcript both report is the beam search's, the same in both runtimes
    assert python["transcript"] == cpp["transcript"] == Transcriber(lm_bundle, threads=1).transcribe(SAMPLE).text
