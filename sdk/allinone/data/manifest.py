"""Readers for the speech-data layouts users already hold, all returning the same `Utterance` list.

- JSONL (NeMo style): one object per line with `audio_filepath`, `text`, optional `duration`, `speaker`, `engine`.
- LibriSpeech: `SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt` lines `ID TRANSCRIPT` next to `ID.flac`.
- Kaldi data dir: `wav.scp` (`ID PATH`, plain paths only), `text` (`ID TRANSCRIPT`), optional `utt2spk`.
- TSV with a header row: audio column `path`/`audio_filepath`/`audio`/`wav`, text column
  `text`/`sentence`/`transcript`, optional `duration`, `speaker`/`client_id` (Common Voice's layout works:
  a bare clip name is also looked up in a `clips/` folder next to the TSV).

Relative audio paths resolve against the manifest's folder. Every entry is checked: audio present, readable,
non-empty and, for WAV, as long as its header says (header only, no decoding), transcript non-empty and
spellable by the tokenizer after normalisation. With `deep=True` every sample is decoded too: NaN/infinite
samples make an entry bad; samples beyond full scale, clipping and silence are warnings (kept, and listed in
`warnings`). A bad entry is reported as `FILE:LINE: what is wrong` (logged as a warning) and skipped, and the
result counts it; with `strict=True` the first bad entry raises BadInputError instead, and so does a
manifest with no utterances at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from allinone.data.audio import audio_duration, scan_audio
from allinone.data.text import normalize_text
from allinone.data.tokenizer import CharTokenizer
from allinone.errors import BadInputError
from allinone.files import MAX_NESTING, atomic_write_text

__all__ = ["Utterance", "Problem", "ManifestReadResult", "read_manifest", "read_jsonl", "read_librispeech",
           "read_kaldi", "read_tsv", "write_jsonl"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One labelled recording. `text` is normalised; `duration` is in seconds; `origin` is 'FILE:LINE'."""

    audio_filepath: str
    text: str
    duration: float
    speaker: str = ""
    engine: str = ""
    id: str = ""
    origin: str = ""


@dataclass(frozen=True)
class Problem:
    """A skipped entry: where it is and what is wrong with it."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ManifestReadResult:
    """What a reader found: the good utterances and every problem it skipped."""

    source: str
    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # kept entries with doubtful audio (deep reads only)

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def hours(self) -> float:
        return sum(u.duration for u in self.utterances) / 3600

    @property
    def speakers(self) -> set[str]:
        return {u.speaker for u in self.utterances if u.speaker}

    def summary(self) -> str:
        return (f"{self.source}: {len(self.utterances)} utterances, {self.hours:.3f} h, "
                f"{len(self.speakers)} speakers, {self.skipped} skipped"
                + (f", {len(self.warnings)} warnings" if self.warnings else ""))


class _Collector:
    """Validates raw entries into a ManifestReadResult, reporting or raising on each bad one."""

    def __init__(self, source: Path, strict: bool, tokenizer: CharTokenizer | None, check_audio: bool,
                 deep: bool = False):
        self.result = ManifestReadResult(str(source))
        self.strict = strict
        self.tokenizer = tokenizer or CharTokenizer()
        self.check_audio = check_audio
        self.deep = deep

    def bad(self, file: Path, line: int, reason: str) -> None:
        problem = Problem(str(file), line, reason)
        if self.strict:
            raise BadInputError(f"{problem} (strict mode stops at the first bad entry)")
        log.warning("skipping %s", problem)
        self.result.problems.append(problem)

    def add(self, file: Path, line: int, audio: Path, text: str, duration: float | None = None,
            speaker: str = "", engine: str = "", utt_id: str = "") -> None:
        norm = normalize_text(text)
        if not norm:
            return self.bad(file, line, "empty transcript")
        missing = self.tokenizer.unspellable(norm)
        if missing:
            return self.bad(file, line, f"transcript has characters the tokenizer cannot spell: "
                                        f"{', '.join(repr(c) for c in missing)}")
        if self.deep:
            try:
                duration, warnings = scan_audio(audio)
            except BadInputError as err:
                return self.bad(file, line, str(err))
            self.result.warnings += [Problem(str(file), line, w) for w in warnings]
        elif self.check_audio or duration is None:
            try:
                duration = audio_duration(audio)
            except BadInputError as err:
                return self.bad(file, line, str(err))
        elif not audio.is_file():
            return self.bad(file, line, f"{audio}: audio file not found")
        self.result.utterances.append(Utterance(str(audio), norm, float(duration), speaker, engine,
                                                utt_id or audio.stem, f"{file}:{line}"))

    def finish(self) -> ManifestReadResult:
        if self.strict and not self.result.utterances:  # nothing to train or score on is not a valid manifest
            raise BadInputError(f"{self.result.source}: no utterances; expected at least one entry "
                                f"(strict mode)")
        if self.result.problems:
            log.warning("%s: skipped %d bad entries of %d", self.result.source, self.result.skipped,
                        self.result.skipped + len(self.result.utterances))
        return self.result


def _positive_seconds(value) -> bool:
    """A usable duration: a positive finite number (JSON's NaN extension and "inf" in a TSV are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _resolve(base: Path, path: str) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, line.rstrip("\n")
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_jsonl(path: str | Path, *, strict: bool = False, tokenizer: CharTokenizer | None = None,
               check_audio: bool = True, deep: bool = False) -> ManifestReadResult:
    """Read a NeMo-style JSONL manifest (`audio_filepath`, `text`, optional `duration`/`speaker`/`engine`)."""
    path = Path(path)
    c = _Collector(path, strict, tokenizer, check_audio, deep)
    for number, line in _lines(path):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            c.bad(path, number, f"bad JSON ({err.msg} at column {err.colno})")
            continue
        except RecursionError:  # the parser recurses per level; a flat entry never gets near
            c.bad(path, number, f"JSON nested more than {MAX_NESTING} levels deep; expected one flat object")
            continue
        if not isinstance(entry, dict):
            c.bad(path, number, "expected a JSON object")
            continue
        audio, text = entry.get("audio_filepath"), entry.get("text")
        if not isinstance(audio, str) or not isinstance(text, str):
            c.bad(path, number, "expected string fields 'audio_filepath' and 'text'")
            continue
        duration = entry.get("duration")
        if duration is not None and not _positive_seconds(duration):
            c.bad(path, number, f"expected a positive number for 'duration', got {duration!r}")
            continue
        c.add(path, number, _resolve(path.parent, audio), text, duration, str(entry.get("speaker", "")),
              str(entry.get("engine", "")), str(entry.get("id", "")))
    return c.finish()


def read_librispeech(root: str | Path, *, strict: bool = False, tokenizer: CharTokenizer | None = None,
                     check_audio: bool = True, deep: bool = False) -> ManifestReadResult:
    """Read a LibriSpeech-layout tree: every `*.trans.txt` under `root` and the `ID.flac` files beside it."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a directory (expected a LibriSpeech split such as dev-clean/)")
    c = _Collector(root, strict, tokenizer, check_audio, deep)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise BadInputError(f"{root}: no *.trans.txt files (expected SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt)")
    for trans in transcripts:
        for number, line in _lines(trans):
            utt_id, _, text = line.partition(" ")
            if not text.strip():
                c.bad(trans, number, "expected 'ID TRANSCRIPT'")
                continue
            c.add(trans, number, trans.parent / f"{utt_id}.flac", text, speaker=utt_id.split("-")[0],
                  utt_id=utt_id)
    return c.finish()


def _read_kaldi_table(path: Path, c: _Collector) -> dict[str, tuple[int, str]]:
    table: dict[str, tuple[int, str]] = {}
    for number, line in _lines(path):
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if not value:
            c.bad(path, number, "expected 'ID VALUE'")
        elif key in table:
            c.bad(path, number, f"duplicate id {key!r} (first on line {table[key][0]})")
        else:
            table[key] = (number, value)
    return table


def read_kaldi(data_dir: str | Path, *, strict: bool = False, tokenizer: CharTokenizer | None = None,
               check_audio: bool = True, deep: bool = False) -> ManifestReadResult:
    """Read a Kaldi data dir: `wav.scp` with plain file paths, `text`, and optionally `utt2spk`.

    Ids present in only one of `wav.scp` and `text` are reported (with the file and line that has them).
    Piped wav.scp entries (`cmd |`) and `segments` files are not supported.
    """
    data_dir = Path(data_dir)
    c = _Collector(data_dir, strict, tokenizer, check_audio, deep)
    if (data_dir / "segments").exists():
        raise BadInputError(f"{data_dir / 'segments'}: segmented Kaldi dirs are not supported; "
                            "expected one recording per utterance")
    wav_scp, text_file = data_dir / "wav.scp", data_dir / "text"
    wavs = _read_kaldi_table(wav_scp, c)
    texts = _read_kaldi_table(text_file, c)
    speakers = _read_kaldi_table(data_dir / "utt2spk", c) if (data_dir / "utt2spk").exists() else {}
    for utt_id, (number, value) in wavs.items():
        if utt_id not in texts:
            c.bad(wav_scp, number, f"id {utt_id!r} has no transcript in {text_file}")
            continue
        if value.endswith("|"):
            c.bad(wav_scp, number, "piped wav.scp commands are not supported; expected a file path")
            continue
        t_number, text = texts[utt_id]
        c.add(text_file, t_number, _resolve(data_dir, value), text, speaker=speakers.get(utt_id, (0, ""))[1],
              utt_id=utt_id)
    for utt_id, (number, _) in texts.items():
        if utt_id not in wavs:
            c.bad(text_file, number, f"id {utt_id!r} has no audio in {wav_scp}")
    return c.finish()


_TSV_AUDIO = ("audio_filepath", "path", "audio", "wav")
_TSV_TEXT = ("text", "sentence", "transcript")
_TSV_SPEAKER = ("speaker", "client_id")


def read_tsv(path: str | Path, *, strict: bool = False, tokenizer: CharTokenizer | None = None,
             check_audio: bool = True, deep: bool = False) -> ManifestReadResult:
    """Read a tab-separated manifest with a header row (column names in the module docstring)."""
    path = Path(path)
    c = _Collector(path, strict, tokenizer, check_audio, deep)
    rows = _lines(path)
    try:
        _, header_line = next(rows)
    except StopIteration:
        raise BadInputError(f"{path}: empty TSV (expected a header row)") from None
    header = header_line.split("\t")
    audio_col = next((h for h in _TSV_AUDIO if h in header), None)
    text_col = next((h for h in _TSV_TEXT if h in header), None)
    if audio_col is None or text_col is None:
        raise BadInputError(f"{path}:1: expected a header with an audio column ({'/'.join(_TSV_AUDIO)}) "
                            f"and a text column ({'/'.join(_TSV_TEXT)}), got {header}")
    speaker_col = next((h for h in _TSV_SPEAKER if h in header), None)
    for number, line in rows:
        cells = line.split("\t")
        if len(cells) != len(header):
            c.bad(path, number, f"expected {len(header)} tab-separated columns, got {len(cells)}")
            continue
        row = dict(zip(header, cells))
        duration = None
        if row.get("duration"):
            try:
                duration = float(row["duration"])
            except ValueError:
                duration = None
            if not _positive_seconds(duration):
                c.bad(path, number, f"expected a positive number in column 'duration', got {row['duration']!r}")
                continue
        audio = _resolve(path.parent, row[audio_col])
        if not audio.exists() and (path.parent / "clips" / row[audio_col]).exists():
            audio = path.parent / "clips" / row[audio_col]
        c.add(path, number, audio, row[text_col], duration, row.get(speaker_col, "") if speaker_col else "")
    return c.finish()


def read_manifest(path: str | Path, *, strict: bool = False, tokenizer: CharTokenizer | None = None,
                  check_audio: bool = True, deep: bool = False) -> ManifestReadResult:
    """Read any supported layout, chosen from what `path` is (see the module docstring)."""
    path = Path(path)
    kwargs = dict(strict=strict, tokenizer=tokenizer, check_audio=check_audio, deep=deep)
    if path.is_dir():
        if (path / "wav.scp").exists():
            return read_kaldi(path, **kwargs)
        return read_librispeech(path, **kwargs)
    if not path.exists():
        raise BadInputError(f"{path}: not found (expected a .jsonl/.json/.tsv manifest, a Kaldi data dir "
                            "or a LibriSpeech folder)")
    if path.suffix.lower() == ".tsv":
        return read_tsv(path, **kwargs)
    if path.suffix.lower() in (".jsonl", ".json"):
        return read_jsonl(path, **kwargs)
    raise BadInputError(f"{path}: unknown manifest type {path.suffix!r} (expected .jsonl, .json or .tsv)")


def write_jsonl(path: str | Path, entries: Iterable[dict | Utterance]) -> None:
    """Write one JSON object per line via a temp file + rename, so `path` is whole or absent, never partial."""
    atomic_write_text(Path(path), "".join(
        json.dumps(asdict(e) if isinstance(e, Utterance) else e, ensure_ascii=False, allow_nan=False) + "\n"
        for e in entries))
