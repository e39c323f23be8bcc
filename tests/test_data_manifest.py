"""Manifest readers (JSONL, LibriSpeech, Kaldi, TSV) on small fixtures written in each format, good and bad."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from allinone.data.audio import load_audio, resample
from allinone.data.manifest import (read_jsonl, read_kaldi, read_librispeech, read_manifest, read_tsv,
                                    write_jsonl)
from allinone.errors import BadInputError

SAMPLE = Path(str(resources.files("allinone") / "assets" / "sample.wav"))
SAMPLE_TEXT = (SAMPLE.parent / "sample.txt").read_text().strip()
SPEECH = load_audio(SAMPLE)  # real speech, (N,) at 16 kHz


def _clip(path: Path, sr: int = 16000, channels: int = 1, seconds: float | None = None) -> Path:
    """Write the sample speech (optionally cut, resampled, multi-channel) to `path` (format from suffix)."""
    x = SPEECH if seconds is None else SPEECH[: int(seconds * 16000)]
    x = resample(x, 16000, sr)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


def _bad_audio(folder: Path) -> tuple[Path, Path]:
    empty = folder / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    junk = folder / "junk.wav"
    junk.write_bytes(b"RIFF but not really a wave file")
    return empty, junk


# --- JSONL ---------------------------------------------------------------------------------------------

def _jsonl_fixture(tmp_path: Path) -> Path:
    _clip(tmp_path / "a.wav")
    _clip(tmp_path / "b.flac", sr=22050, channels=2, seconds=1.5)
    _bad_audio(tmp_path)
    lines = [
        json.dumps({"audio_filepath": "a.wav", "text": "Hello, World!", "duration": 4.05, "speaker": "s1"}),
        json.dumps({"audio_filepath": str(tmp_path / "b.flac"), "text": "It's 2 o'clock"}),
        "{not json",
        json.dumps({"audio_filepath": "missing.wav", "text": "hello"}),
        json.dumps({"audio_filepath": "empty.wav", "text": "hello"}),
        json.dumps({"audio_filepath": "junk.wav", "text": "hello"}),
        json.dumps({"audio_filepath": "a.wav", "text": "\u03b1\u03b2\u03b3 greek"}),
        json.dumps({"audio_filepath": "a.wav", "text": "..."}),
        json.dumps({"audio_filepath": "a.wav"}),
        json.dumps(["a list"]),
        json.dumps({"audio_filepath": "a.wav", "text": "hi", "duration": -1}),
        "",
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_reads_good_entries_and_reports_each_bad_one_with_its_line(tmp_path: Path) -> None:
    result = read_jsonl(_jsonl_fixture(tmp_path))
    assert [u.text for u in result.utterances] == ["hello world", "it's two o'clock"]
    a, b = result.utterances
    assert a.duration == pytest.approx(len(SPEECH) / 16000, abs=1e-3) and a.speaker == "s1"
    assert b.duration == pytest.approx(1.5, abs=1e-3)
    assert a.origin.endswith("m.jsonl:1") and Path(a.audio_filepath).is_absolute()
    lines_and_reasons = [(p.line, p.reason) for p in result.problems]
    assert [line for line, _ in lines_and_reasons] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    reasons = dict(lines_and_reasons)
    assert "bad JSON" in reasons[3]
    assert "not found" in reasons[4]
    assert "empty audio" in reasons[5]
    assert "unreadable audio" in reasons[6]
    assert "cannot spell" in reasons[7] and "'\u03b1'" in reasons[7]
    assert "empty transcript" in reasons[8]
    assert "'text'" in reasons[9]
    assert "JSON object" in reasons[10]
    assert "duration" in reasons[11]
    assert result.skipped == 9
    assert str(result.problems[0]).startswith(f"{tmp_path / 'm.jsonl'}:3: ")


def test_jsonl_strict_fails_on_the_first_bad_line(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"m\.jsonl:3: bad JSON"):
        read_jsonl(_jsonl_fixture(tmp_path), strict=True)


def test_jsonl_bad_entries_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    read_jsonl(_jsonl_fixture(tmp_path))
    messages = [r.getMessage() for r in caplog.records]
    assert any(":4:" in m and "not found" in m for m in messages)
    assert any("skipped 9 bad entries of 11" in m for m in messages)


def test_write_jsonl_round_trips_and_is_atomic(tmp_path: Path) -> None:
    src = read_jsonl(_jsonl_fixture(tmp_path)).utterances
    out = tmp_path / "out" / "copy.jsonl"
    write_jsonl(out, src)
    assert [p.name for p in out.parent.iterdir()] == ["copy.jsonl"]
    again = read_jsonl(out, strict=True).utterances
    assert [(u.audio_filepath, u.text) for u in again] == [(u.audio_filepath, u.text) for u in src]

    class Boom(Exception):
        pass

    def entries():
        yield {"audio_filepath": "a.wav", "text": "x"}
        raise Boom

    with pytest.raises(Boom):
        write_jsonl(out, entries())
    assert [p.name for p in out.parent.iterdir()] == ["copy.jsonl"]  # old file intact, no temp left
    assert len(out.read_text().splitlines()) == 2


# --- LibriSpeech ---------------------------------------------------------------------------------------

def test_librispeech_layout(tmp_path: Path) -> None:
    chapter = tmp_path / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    _clip(chapter / "84-121123-0000.flac")
    _clip(chapter / "84-121123-0001.flac", seconds=2.0)
    (chapter / "84-121123.trans.txt").write_text(
        f"84-121123-0000 {SAMPLE_TEXT.upper()}\n84-121123-0001 GO DO YOU HEAR\n84-121123-0002 NO AUDIO HERE\n")
    result = read_manifest(tmp_path / "dev-clean")
    assert [u.id for u in result.utterances] == ["84-121123-0000", "84-121123-0001"]
    assert result.utterances[0].text == SAMPLE_TEXT and result.utterances[0].speaker == "84"
    assert result.utterances[1].duration == pytest.approx(2.0, abs=1e-3)
    assert result.skipped == 1 and result.problems[0].line == 3 and "not found" in result.problems[0].reason


def test_librispeech_without_transcripts_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="trans.txt"):
        read_librispeech(tmp_path)


# --- Kaldi ---------------------------------------------------------------------------------------------

def _kaldi_fixture(tmp_path: Path) -> Path:
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    _clip(tmp_path / "u1.wav", sr=8000)
    _clip(tmp_path / "u2.wav", channels=2)
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'u1.wav'}\nu2 ../../u2.wav\nu3 {tmp_path / 'u1.wav'}\n"
                               "u4 sox in.wav -t wav - |\n")
    (d / "text").write_text(f"u1 {SAMPLE_TEXT}\nu2 HELLO THERE\nu4 piped audio\nu5 no audio for me\n")
    (d / "utt2spk").write_text("u1 spk1\nu2 spk2\nu3 spk1\nu4 spk1\n")
    return d


def test_kaldi_dir_reports_mismatched_ids_on_both_sides(tmp_path: Path) -> None:
    d = _kaldi_fixture(tmp_path)
    result = read_manifest(d)
    assert [(u.id, u.speaker, u.text) for u in result.utterances] == [
        ("u1", "spk1", SAMPLE_TEXT), ("u2", "spk2", "hello there")]
    assert result.utterances[0].duration == pytest.approx(len(SPEECH) / 16000, abs=1e-3)  # 8 kHz file, same length
    problems = {(Path(p.file).name, p.line): p.reason for p in result.problems}
    assert "no transcript" in problems[("wav.scp", 3)]
    assert "piped" in problems[("wav.scp", 4)]
    assert "no audio" in problems[("text", 4)]
    assert result.skipped == 3


def test_kaldi_strict_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"wav\.scp:3: id 'u3' has no transcript"):
        read_kaldi(_kaldi_fixture(tmp_path), strict=True)


def test_kaldi_missing_text_file_and_segments(tmp_path: Path) -> None:
    d = _kaldi_fixture(tmp_path)
    (d / "text").unlink()
    with pytest.raises(BadInputError, match=r"text: file not found"):
        read_kaldi(d)
    (d / "segments").write_text("s1 u1 0.0 1.0\n")
    with pytest.raises(BadInputError, match="segments"):
        read_kaldi(d)


# --- TSV -----------------------------------------------------------------------------------------------

def test_tsv_with_common_voice_columns(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    _clip(tmp_path / "clips" / "c1.wav", sr=48000)
    _clip(tmp_path / "c2.flac", seconds=1.0)
    (tmp_path / "train.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\n"
        f"abc\tc1.wav\t{SAMPLE_TEXT.capitalize()}.\t2\n"
        "def\tc2.flac\tShort one!\t1\n"
        "ghi\tc3.wav\tmissing audio\t0\n"
        "bad row with no tabs\n")
    result = read_tsv(tmp_path / "train.tsv")
    assert [(u.speaker, u.text) for u in result.utterances] == [("abc", SAMPLE_TEXT), ("def", "short one")]
    assert [(p.line, "not found" in p.reason or "columns" in p.reason) for p in result.problems] == [
        (4, True), (5, True)]


def test_tsv_without_known_columns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(BadInputError, match=r"x\.tsv:1: expected a header"):
        read_tsv(tmp_path / "x.tsv")


def test_read_manifest_rejects_unknown_things(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        read_manifest(tmp_path / "nothing.jsonl")
    (tmp_path / "notes.txt").write_text("hi\n")
    with pytest.raises(BadInputError, match="unknown manifest type"):
        read_manifest(tmp_path / "notes.txt")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(BadInputError, match="not UTF-8"):
        read_manifest(tmp_path / "latin1.jsonl")


# --- CLI -----------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "allinone.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_data_check_reports_and_strict_fails_without_traceback(tmp_path: Path) -> None:
    manifest = _jsonl_fixture(tmp_path)
    ok = _cli("data", "check", str(manifest))
    assert ok.returncode == 0, ok.stderr
    assert "2 utterances" in ok.stdout and "9 skipped" in ok.stdout
    assert f"{manifest}:3: bad JSON" in ok.stderr
    strict = _cli("data", "check", str(manifest), "--strict")
    assert strict.returncode == 2
    assert strict.stderr.strip().count("\n") == 0 and "Traceback" not in strict.stderr
    assert f"{manifest}:3" in strict.stderr
