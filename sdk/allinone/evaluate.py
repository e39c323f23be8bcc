"""Evaluation of nested systems: greedy CTC decoding, WER/CER with jiwer, per-utterance hypotheses files
(hyps.jsonl), and the matched-pairs sentence-segment word error (MAPSSWE) test between two systems.

Conventions (docs/evaluation.md): references are the manifest's normalised transcripts and hypotheses the greedy
CTC output of the same tokenizer, so both are lower-case words separated by single spaces. WER and CER are
corpus-level: total edits (substitutions + deletions + insertions) over total reference words (characters,
spaces included), never a mean of per-utterance rates.

Longer than 400 lines because scoring, the hypotheses file it writes and reads back, and the significance test
over those hypotheses share the same per-utterance edit counts; each part is a section of its own.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jiwer

from allinone.errors import BadInputError
from allinone.files import atomic_write_text, check_size, parse_json
from allinone.validation import check_keys

if TYPE_CHECKING:  # torch is imported where it runs, so `allinone compare` never pays for it
    import torch

    from allinone.data.manifest import Utterance
    from allinone.data.tokenizer import CharTokenizer
    from allinone.spec import SubnetSpec

__all__ = [
    "HYPOTHESES_FORMAT_VERSION", "MIN_CORRECT_BOUNDARY", "ALPHA",
    "Hypothesis", "SystemResult", "Segment", "MapssweResult",
    "greedy_decode", "score_utterance", "system_result", "evaluate",
    "save_hypotheses", "load_hypotheses",
    "mapsswe", "compare_files", "format_comparison", "format_results_table", "results_to_json",
]

HYPOTHESES_FORMAT_VERSION = 1
HYPOTHESES_KIND = "allinone-hypotheses"  # header tag, so a manifest passed by mistake is named as such
MIN_CORRECT_BOUNDARY = 2  # NIST sc_stats' default: words both systems got right that close a segment
ALPHA = 0.05  # significance level of `MapssweResult.significant`
FEW_SEGMENTS = 30  # below this, the normal approximation behind the p-value is rough (a note, not a rule)


# ---- decoding and scoring -------------------------------------------------------------------------------------


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer: CharTokenizer) -> list[str]:
    """Greedy CTC decoding of a batch: per-frame argmax, then the tokenizer's collapse (merge repeats, drop blank).

    log_probs: (B, T, V) scores (log-probabilities or logits; only the argmax matters); lengths: (B,) valid
    frames per row, padding frames beyond them are ignored. Returns B strings.
    """
    if log_probs.dim() != 3:
        raise BadInputError(f"log_probs: expected a (batch, frames, vocab) tensor, got shape {tuple(log_probs.shape)}")
    if lengths.dim() != 1 or lengths.shape[0] != log_probs.shape[0]:
        raise BadInputError(f"lengths: expected shape ({log_probs.shape[0]},), got {tuple(lengths.shape)}")
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    lengths = lengths.cpu().clamp(0, best.shape[1])
    return [tokenizer.decode_ctc(best[b, : int(lengths[b])].tolist()) for b in range(best.shape[0])]


@dataclass(frozen=True)
class Hypothesis:
    """One utterance of one system. Errors are edit counts against `ref` (substitutions + deletions + insertions)."""

    id: str
    ref: str
    hyp: str
    errors: int  # word edits
    ref_words: int
    char_errors: int  # character edits (spaces are characters)
    ref_chars: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _word_edits(ref: str, hyp: str) -> int:
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def _char_edits(ref: str, hyp: str) -> int:
    if not hyp:  # every reference character is deleted (and some jiwer releases refuse empty strings)
        return len(ref)
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def score_utterance(utt_id: str, ref: str, hyp: str) -> Hypothesis:
    """Word and character edit counts of `hyp` against the non-empty reference `ref` (both normalised text)."""
    ref, hyp = " ".join(ref.split()), " ".join(hyp.split())  # the counts below assume single spaces
    if not ref:
        raise BadInputError(f"utterance {utt_id!r}: empty reference; expected a non-empty transcript")
    return Hypothesis(utt_id, ref, hyp, _word_edits(ref, hyp), len(ref.split()), _char_edits(ref, hyp), len(ref))


# ---- per-system results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemResult:
    """WER/CER of one nested system over a set of utterances, with every hypothesis.

    `wer` and `cer` are fractions (0.073 = 7.3%), corpus-level: total edits / total reference words (chars).
    `params`, `bytes` and `macs_per_second` come from `allinone.size.subnet_size`.
    """

    subnet: str
    wer: float
    cer: float
    params: int
    bytes: int  # deployed weight bytes at the system's precision
    macs_per_second: int
    n_utterances: int
    hypotheses: tuple[Hypothesis, ...]
    checkpoint: str | None = None  # provenance, recorded in hyps.jsonl headers
    manifest: str | None = None

    @property
    def word_errors(self) -> int:
        return sum(h.errors for h in self.hypotheses)

    @property
    def ref_words(self) -> int:
        return sum(h.ref_words for h in self.hypotheses)

    @property
    def char_errors(self) -> int:
        return sum(h.char_errors for h in self.hypotheses)

    @property
    def ref_chars(self) -> int:
        return sum(h.ref_chars for h in self.hypotheses)

    def to_dict(self) -> dict[str, Any]:
        """The summary (no hypotheses): what `allinone eval --json` prints for each system."""
        return {"subnet": self.subnet, "wer": self.wer, "cer": self.cer, "params": self.params, "bytes": self.bytes,
                "macs_per_second": self.macs_per_second, "n_utterances": self.n_utterances,
                "word_errors": self.word_errors, "ref_words": self.ref_words, "char_errors": self.char_errors,
                "ref_chars": self.ref_chars}


def system_result(subnet: str, hypotheses: Sequence[Hypothesis], *, params: int, bytes: int, macs_per_second: int,
                  checkpoint: str | None = None, manifest: str | None = None) -> SystemResult:
    """A SystemResult whose WER/CER are the corpus-level rates of `hypotheses` (at least one)."""
    hyps = tuple(hypotheses)
    if not hyps:
        raise BadInputError(f"system {subnet}: no utterances to score")
    words, chars = sum(h.ref_words for h in hyps), sum(h.ref_chars for h in hyps)
    return SystemResult(subnet, sum(h.errors for h in hyps) / words, sum(h.char_errors for h in hyps) / chars,
                        params, bytes, macs_per_second, len(hyps), hyps, checkpoint, manifest)


# ---- running systems over a manifest --------------------------------------------------------------------------


def _utterance_ids(utterances: Sequence[Utterance]) -> list[str]:
    """Manifest ids (audio file stem when absent); repeats get '#2', '#3'... in manifest order, so two runs
    over the same manifest always produce the same ids and `compare` can match them."""
    seen: dict[str, int] = {}
    ids = []
    for u in utterances:
        base = u.id or Path(u.audio_filepath).stem
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def _load_batch(utterances: Sequence[Utterance], device: torch.device,
                min_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and zero-pad a batch: waveforms (B, N) float32 and lengths (B,) samples on `device`."""
    import torch

    from allinone.data.audio import load_audio

    waves = [torch.from_numpy(load_audio(u.audio_filepath)) for u in utterances]  # each (N_i,)
    # The model refuses inputs shorter than its minimum (0.5 s); pad with trailing silence, as an app calling
    # the exported program must.
    waves = [torch.nn.functional.pad(w, (0, max(0, min_samples - w.shape[0]))) for w in waves]
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)  # (B,)
    waveforms = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)  # (B, N)
    return waveforms.to(device), lengths.to(device)


def _progress_bar(total_seconds: float, n_systems: int, enabled: bool):
    from tqdm.auto import tqdm

    # Whole audio seconds keep the counter readable (fractional updates print float noise).
    return tqdm(total=max(1, round(total_seconds)), unit="s", unit_scale=False, disable=not enabled, leave=False,
                desc=f"evaluating {n_systems} system{'s' if n_systems != 1 else ''} (audio s)", dynamic_ncols=True)


def _check_finite(log_probs: torch.Tensor, lengths: torch.Tensor, spec: SubnetSpec, batch_ids: list[str]) -> None:
    """Refuse NaN/inf scores: greedy decoding would turn them into some text and the WER into a number."""
    import torch

    valid = torch.arange(log_probs.shape[1], device=lengths.device)[None, :] < lengths[:, None]  # (B, T)
    bad = (~torch.isfinite(log_probs).all(-1) & valid).any(-1)  # (B,)
    if bad.any():
        first = batch_ids[int(bad.nonzero()[0])]
        raise BadInputError(f"system {spec.id}: non-finite log-probs (NaN or inf) on utterance {first}; expected "
                            f"finite scores (are the checkpoint's weights finite?)")


def evaluate(model: torch.nn.Module, specs: Iterable[SubnetSpec], utterances: Sequence[Utterance],
             tokenizer: CharTokenizer, *, batch_seconds: float = 60.0, progress: bool = True,
             decoders: dict[str, Callable] | None = None, timings: dict[str, float] | None = None
             ) -> list[SystemResult]:
    """WER/CER of each nested system `spec` of the supernet `model` over `utterances`, greedy CTC decoding.

    `decoders` adds, per system, one more result per named decoder (subnet id `SPEC+NAME`): a callable
    taking one utterance's (T, V) float32 numpy log-probs and returning its text (e.g. a beam search with
    an LM, `allinone_runtime.beam.BeamDecoder.decode`). `timings`, if given, receives the seconds spent in
    the network (`network_s`), in greedy decoding (`greedy_s`) and in each decoder (`NAME_s`).

    Utterances are batched by duration (at most `batch_seconds` of padded audio per batch) and each batch is
    decoded once and run through every system, so audio is read once however many systems are compared.
    Runs under `torch.no_grad()` in eval mode on the model's device; the model's train/eval mode is restored.
    Returns one SystemResult per distinct spec, in the order given.
    """
    import torch

    from allinone.data.batching import DurationBatchSampler
    from allinone.models.conformer import MIN_SAMPLES
    from allinone.size import subnet_size

    specs = list(dict.fromkeys(specs))
    utterances = list(utterances)
    if not specs:
        raise BadInputError("evaluate: no subnet specs given; expected at least one")
    if not utterances:
        raise BadInputError("evaluate: no utterances (is the manifest empty?)")
    for spec in specs:  # fail before reading any audio
        model.search_space.validate(spec)
    ids = _utterance_ids(utterances)
    texts: dict[SubnetSpec, list[str]] = {spec: [""] * len(utterances) for spec in specs}
    extra = {(spec, name): [""] * len(utterances) for spec in specs for name in (decoders or {})}
    clock = defaultdict(float, {"network_s": 0.0, "greedy_s": 0.0})
    batches = DurationBatchSampler([u.duration for u in utterances], batch_seconds, shuffle=False)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    done = 0.0  # audio seconds decoded
    try:
        with torch.no_grad(), _progress_bar(sum(u.duration for u in utterances), len(specs), progress) as bar:
            for batch in batches:
                waveforms, lengths = _load_batch([utterances[i] for i in batch], device, MIN_SAMPLES)
                for spec in specs:
                    started = time.perf_counter()
                    log_probs, out_lengths = model(waveforms, lengths, spec)  # (B, T, V), (B,)
                    clock["network_s"] += time.perf_counter() - started
                    _check_finite(log_probs, out_lengths, spec, [ids[i] for i in batch])
                    started = time.perf_counter()
                    for i, text in zip(batch, greedy_decode(log_probs, out_lengths, tokenizer)):
                        texts[spec][i] = text
                    clock["greedy_s"] += time.perf_counter() - started
                    if decoders:
                        rows = log_probs.float().cpu().numpy()  # (B, T, V)
                        for name, decode in decoders.items():
                            started = time.perf_counter()
                            for b, i in enumerate(batch):
                                extra[(spec, name)][i] = decode(rows[b, : int(out_lengths[b])])
                            clock[f"{name}_s"] += time.perf_counter() - started
                done += sum(utterances[i].duration for i in batch)
                bar.update(min(bar.total, round(done)) - bar.n)
    finally:
        model.train(was_training)
    results = []
    for spec in specs:
        size = subnet_size(model, spec)
        hyps = [score_utterance(utt_id, u.text, hyp) for utt_id, u, hyp in zip(ids, utterances, texts[spec])]
        results.append(system_result(spec.id, hyps, params=size.params, bytes=size.weight_bytes,
                                     macs_per_second=size.macs_per_second))
        for name in decoders or {}:
            hyps = [score_utterance(utt_id, u.text, hyp)
                    for utt_id, u, hyp in zip(ids, utterances, extra[(spec, name)])]
            results.append(system_result(f"{spec.id}+{name}", hyps, params=size.params, bytes=size.weight_bytes,
                                         macs_per_second=size.macs_per_second))
    if timings is not None:
        timings.update(clock)
    return results


# ---- tables and JSON ------------------------------------------------------------------------------------------


def format_results_table(results: Sequence[SystemResult]) -> str:
    """A plain-text table, one row per system: subnet, WER, CER, errors/words, params, weight MiB, utterances."""
    rows = [("subnet", "WER", "CER", "errors/words", "params", "MiB", "utts")]
    for r in results:
        rows.append((r.subnet, f"{r.wer:.2%}", f"{r.cer:.2%}", f"{r.word_errors}/{r.ref_words}", f"{r.params:,}",
                     f"{r.bytes / 2**20:.2f}", str(r.n_utterances)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:  # subnet left-aligned, numbers right-aligned
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def results_to_json(results: Sequence[SystemResult]) -> str:
    """A JSON list with one object per system (see `SystemResult.to_dict`)."""
    return json.dumps([r.to_dict() for r in results], indent=2, allow_nan=False)


# ---- hyps.jsonl -----------------------------------------------------------------------------------------------

_HEADER_KEYS = ("format_version", "kind", "subnet", "wer", "cer", "params", "bytes", "macs_per_second",
                "n_utterances", "checkpoint", "manifest")
_ENTRY_KEYS = tuple(Hypothesis.__dataclass_fields__)


def _header(result: SystemResult, checkpoint: str | None, manifest: str | None) -> dict[str, Any]:
    return {"format_version": HYPOTHESES_FORMAT_VERSION, "kind": HYPOTHESES_KIND, "subnet": result.subnet,
            "wer": result.wer, "cer": result.cer, "params": result.params, "bytes": result.bytes,
            "macs_per_second": result.macs_per_second, "n_utterances": result.n_utterances,
            "checkpoint": result.checkpoint if checkpoint is None else str(checkpoint),
            "manifest": result.manifest if manifest is None else str(manifest)}


def save_hypotheses(result: SystemResult, path: str | Path, *, checkpoint: str | None = None,
                    manifest: str | None = None) -> None:
    """Write `result` as hyps.jsonl: a header object, then one object per utterance (docs/formats.md).

    `checkpoint` and `manifest` (e.g. their paths) are recorded in the header, overriding the result's own.
    Written to a temp file in the same folder and renamed, so `path` is whole or absent, never partial.
    """
    lines = [_header(result, checkpoint, manifest)] + [h.to_dict() for h in result.hypotheses]
    atomic_write_text(Path(path), "".join(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"
                                                 for obj in lines))


def _check_keys(obj: Any, schema: type | Sequence[str], where: str) -> dict:
    if not isinstance(obj, dict):
        raise BadInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    check_keys(obj, schema, where, quoted=True)
    return obj


def _check_type(value: Any, kind: str, where: str, key: str) -> None:
    ok = {"int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
          "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and value >= 0,
          "str": isinstance(value, str),
          "str?": value is None or isinstance(value, str)}[kind]
    if not ok:
        expected = {"int": "an integer >= 0", "number": "a number >= 0", "str": "a string",
                    "str?": "a string or null"}[kind]
        raise BadInputError(f"{where}: {key}: expected {expected}, got {value!r:.60}")


_HEADER_TYPES = {"subnet": "str", "wer": "number", "cer": "number", "params": "int", "bytes": "int",
                 "macs_per_second": "int", "n_utterances": "int", "checkpoint": "str?", "manifest": "str?"}
_ENTRY_TYPES = {"id": "str", "ref": "str", "hyp": "str", "errors": "int", "ref_words": "int", "char_errors": "int",
                "ref_chars": "int"}


def _parse_header(obj: Any, where: str) -> dict:
    if isinstance(obj, dict) and obj.get("kind") != HYPOTHESES_KIND:
        raise BadInputError(f"{where}: not a hypotheses file (the first line has no \"kind\": \"{HYPOTHESES_KIND}\"); "
                            "expected a hyps.jsonl written by allinone")
    if isinstance(obj, dict) and obj.get("format_version") != HYPOTHESES_FORMAT_VERSION:
        raise BadInputError(f"{where}: format_version: expected {HYPOTHESES_FORMAT_VERSION}, "
                            f"got {obj.get('format_version')!r}")
    _check_keys(obj, _HEADER_KEYS, where)
    for key, kind in _HEADER_TYPES.items():
        _check_type(obj[key], kind, where, key)
    return obj


def _parse_entry(obj: Any, where: str) -> Hypothesis:
    _check_keys(obj, Hypothesis, where)
    for key, kind in _ENTRY_TYPES.items():
        _check_type(obj[key], kind, where, key)
    if not obj["id"] or not obj["ref"].strip():
        raise BadInputError(f"{where}: expected a non-empty id and ref")
    # Recount rather than trust: edit counts are unique minima, so any jiwer version gives the same numbers.
    expected = score_utterance(obj["id"], obj["ref"], obj["hyp"])
    if Hypothesis(**obj) != expected:
        bad = next(k for k in _ENTRY_KEYS if obj[k] != getattr(expected, k))
        raise BadInputError(f"{where}: {bad}: {obj[bad]!r:.60} does not match ref and hyp "
                            f"(expected {getattr(expected, bad)!r:.60})")
    return expected


def _read_json_lines(path: Path) -> list[tuple[int, Any]]:
    try:
        check_size(path, "a hypotheses file (hyps.jsonl)")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected a hypotheses file (hyps.jsonl)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 JSONL file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            rows.append((number, parse_json(line, f"{path}:{number}", "a hypotheses line")))
    if not rows:
        raise BadInputError(f"{path}: empty file; expected a hypotheses file (hyps.jsonl)")
    return rows


def load_hypotheses(path: str | Path) -> SystemResult:
    """Read and validate a hyps.jsonl written by `save_hypotheses`; BadInputError naming FILE:LINE otherwise.

    Checked: header keys and types, format_version, every entry's keys and types, unique ids, edit counts
    that match ref and hyp, the utterance count, and header WER/CER equal to the entries' totals.
    """
    path = Path(path)
    rows = _read_json_lines(path)
    header = _parse_header(rows[0][1], f"{path}:{rows[0][0]}")
    hyps, first_line = [], {}
    for number, obj in rows[1:]:
        h = _parse_entry(obj, f"{path}:{number}")
        if h.id in first_line:
            raise BadInputError(f"{path}:{number}: id {h.id!r} repeats line {first_line[h.id]}; expected unique ids")
        first_line[h.id] = number
        hyps.append(h)
    if len(hyps) != header["n_utterances"]:
        raise BadInputError(f"{path}: header says {header['n_utterances']} utterances, the file has {len(hyps)} "
                            "(truncated or edited?)")
    result = system_result(header["subnet"], hyps, params=header["params"], bytes=header["bytes"],
                           macs_per_second=header["macs_per_second"], checkpoint=header["checkpoint"],
                           manifest=header["manifest"])
    for key in ("wer", "cer"):
        if not math.isclose(header[key], getattr(result, key), rel_tol=1e-9, abs_tol=1e-12):
            raise BadInputError(f"{path}:{rows[0][0]}: {key} {header[key]} does not match the entries "
                                f"({getattr(result, key)})")
    return result


# ---- MAPSSWE --------------------------------------------------------------------------------------------------
#
# Slots: an utterance of R reference words has 2R+1 slots: slot 2j is the gap before word j (gap R after the last
# word) and slot 2j+1 is word j. A system's errors are placed in slots: a substituted or deleted word in its word
# slot, inserted words in the gap they were inserted into. A slot is clean when neither system has an error there.
# A boundary is a maximal run of clean slots holding at least MIN_CORRECT_BOUNDARY words (so those words are
# consecutive and correct in both systems with nothing inserted between them). Segments are the stretches between
# boundaries (and utterance ends) in which at least one system errs. This is the segmentation of NIST sc_stats
# (Gillick & Cox 1989; Pallett et al. 1990); segments are independent, so their error differences are a sample.


@dataclass(frozen=True)
class Segment:
    """One segment: reference words [start, end) of utterance `utterance` and each system's errors in it."""

    utterance: str
    start: int
    end: int
    errors_a: int
    errors_b: int


@dataclass(frozen=True)
class MapssweResult:
    """Outcome of the MAPSSWE test of system A against system B.

    `mean_diff` is the mean of (errors of A - errors of B) per segment, so negative means A makes fewer errors;
    `z` = mean_diff / (std_diff / sqrt(n_segments)) with the n-1 sample standard deviation, and `p_value` is
    two-sided under the normal distribution. `z` is None when it is undefined (fewer than 2 segments) and
    +-inf when every segment differs by the same non-zero amount; `significant` means p_value < ALPHA.
    """

    system_a: str
    system_b: str
    n_utterances: int
    ref_words: int
    errors_a: int
    errors_b: int
    segments: tuple[Segment, ...]
    mean_diff: float
    std_diff: float
    z: float | None
    p_value: float
    significant: bool
    alpha: float = ALPHA

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def wer_a(self) -> float:
        return self.errors_a / self.ref_words

    @property
    def wer_b(self) -> float:
        return self.errors_b / self.ref_words

    @property
    def better(self) -> str | None:
        """'a' or 'b': the system with fewer errors when the difference is significant; None otherwise."""
        if not self.significant:
            return None
        return "a" if self.mean_diff < 0 else "b"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (segments counted, not listed; a non-finite z is written as null)."""
        z = self.z if self.z is not None and math.isfinite(self.z) else None
        return {"test": "mapsswe", "min_correct_boundary": MIN_CORRECT_BOUNDARY, "system_a": self.system_a,
                "system_b": self.system_b, "n_utterances": self.n_utterances, "ref_words": self.ref_words,
                "errors_a": self.errors_a, "errors_b": self.errors_b, "wer_a": self.wer_a, "wer_b": self.wer_b,
                "segments": self.n_segments, "mean_diff": self.mean_diff, "std_diff": self.std_diff, "z": z,
                "p_value": self.p_value, "alpha": self.alpha, "significant": self.significant,
                "better": self.better}


def _error_slots(n_ref: int, chunks: Sequence) -> list[int]:
    """Errors per slot (see the slot layout above) from one jiwer word alignment of an utterance."""
    slots = [0] * (2 * n_ref + 1)
    for c in chunks:
        if c.type == "insert":
            slots[2 * c.ref_start_idx] += c.hyp_end_idx - c.hyp_start_idx
        elif c.type in ("substitute", "delete"):
            for j in range(c.ref_start_idx, c.ref_end_idx):
                slots[2 * j + 1] += 1
            # jiwer pairs substitutions one to one; should a chunk ever hold more hypothesis words, the extra
            # ones are insertions after it
            extra = (c.hyp_end_idx - c.hyp_start_idx) - (c.ref_end_idx - c.ref_start_idx)
            if c.type == "substitute" and extra > 0:
                slots[2 * c.ref_end_idx] += extra
    return slots


def _segment_slot_ranges(slots_a: Sequence[int], slots_b: Sequence[int]) -> list[tuple[int, int]]:
    """Slot ranges [s, e) of the segments of one utterance (stretches between boundaries with an error)."""
    n = len(slots_a)
    boundary = [False] * n
    s = 0
    while s < n:  # mark maximal clean runs that hold at least MIN_CORRECT_BOUNDARY words
        if slots_a[s] or slots_b[s]:
            s += 1
            continue
        e = s
        while e < n and not (slots_a[e] or slots_b[e]):
            e += 1
        if sum(1 for k in range(s, e) if k % 2 == 1) >= MIN_CORRECT_BOUNDARY:
            boundary[s:e] = [True] * (e - s)
        s = e
    ranges, s = [], 0
    while s < n:
        if boundary[s]:
            s += 1
            continue
        e = s
        while e < n and not boundary[e]:
            e += 1
        if any(slots_a[s:e]) or any(slots_b[s:e]):  # an error-free stretch (e.g. one gap) is not a segment
            ranges.append((s, e))
        s = e
    return ranges


def _as_hypotheses(system: SystemResult | Sequence[Hypothesis]) -> tuple[str | None, list[Hypothesis]]:
    if isinstance(system, SystemResult):
        return system.subnet, list(system.hypotheses)
    return None, list(system)


def _matched(hyps_a: list[Hypothesis], hyps_b: list[Hypothesis]) -> list[tuple[Hypothesis, Hypothesis]]:
    """Pairs of the two systems' hypotheses of the same utterance, in A's order; refuses different sets."""
    if not hyps_a or not hyps_b:
        raise BadInputError("mapsswe: both systems need at least one utterance")
    by_id_b = {h.id: h for h in hyps_b}
    if len(by_id_b) != len(hyps_b) or len({h.id for h in hyps_a}) != len(hyps_a):
        raise BadInputError("mapsswe: utterance ids repeat within a system; expected unique ids")
    only_a = [h.id for h in hyps_a if h.id not in by_id_b]
    only_b = sorted(set(by_id_b) - {h.id for h in hyps_a})
    if only_a or only_b:
        example = f"{only_a[0]!r} is only in A" if only_a else f"{only_b[0]!r} is only in B"
        raise BadInputError(f"mapsswe: the systems were scored on different utterances ({len(only_a)} only in A, "
                            f"{len(only_b)} only in B; {example}); expected the same manifest")
    pairs = [(a, by_id_b[a.id]) for a in hyps_a]
    for a, b in pairs:
        if a.ref.split() != b.ref.split():
            raise BadInputError(f"mapsswe: utterance {a.id!r} has different references ({a.ref[:40]!r} vs "
                                f"{b.ref[:40]!r}); expected the same manifest and text normalisation")
    return pairs


def _z_test(diffs: Sequence[int]) -> tuple[float, float, float | None, float]:
    """(mean, n-1 std, z, two-sided p) of per-segment error differences."""
    n = len(diffs)
    if n < 2:  # no variance estimate: no evidence either way
        return (float(diffs[0]) if diffs else 0.0), 0.0, None, 1.0
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std == 0.0:
        # All segments differ by the same amount: no difference at all (z = 0), or the same non-zero difference
        # everywhere (z = +-inf). NIST sc_stats reports z = 0 for both; the limit is the honest answer.
        return mean, 0.0, (0.0 if mean == 0 else math.copysign(math.inf, mean)), (1.0 if mean == 0 else 0.0)
    z = mean / (std / math.sqrt(n))
    return mean, std, z, math.erfc(abs(z) / math.sqrt(2))  # P(|N(0,1)| >= |z|)


def mapsswe(hyps_a: SystemResult | Sequence[Hypothesis], hyps_b: SystemResult | Sequence[Hypothesis]) -> MapssweResult:
    """Matched-pairs sentence-segment word error test (Gillick & Cox 1989, as in NIST sc_stats) of A against B.

    Both systems must cover the same utterance ids with the same references (BadInputError otherwise). Each
    hypothesis is aligned to its reference with jiwer; utterances are cut into segments at runs of at least
    MIN_CORRECT_BOUNDARY words both systems got right (see the slot layout above), and the per-segment error
    differences A - B are tested for zero mean with a two-sided z test.
    """
    name_a, list_a = _as_hypotheses(hyps_a)
    name_b, list_b = _as_hypotheses(hyps_b)
    pairs = _matched(list_a, list_b)
    refs = [a.ref for a, _ in pairs]
    align_a = jiwer.process_words(refs, [a.hyp for a, _ in pairs]).alignments
    align_b = jiwer.process_words(refs, [b.hyp for _, b in pairs]).alignments
    segments = []
    for (a, _), chunks_a, chunks_b in zip(pairs, align_a, align_b):
        n_ref = len(a.ref.split())
        slots_a, slots_b = _error_slots(n_ref, chunks_a), _error_slots(n_ref, chunks_b)
        for s, e in _segment_slot_ranges(slots_a, slots_b):
            # slot 2j+1 is word j: words in [s, e) are j = ceil((s-1)/2) .. ceil((e-1)/2) - 1
            segments.append(Segment(a.id, s // 2, e // 2, sum(slots_a[s:e]), sum(slots_b[s:e])))
    mean, std, z, p = _z_test([seg.errors_a - seg.errors_b for seg in segments])
    return MapssweResult(
        system_a=name_a or "A", system_b=name_b or "B", n_utterances=len(pairs),
        ref_words=sum(len(a.ref.split()) for a, _ in pairs),
        errors_a=sum(seg.errors_a for seg in segments), errors_b=sum(seg.errors_b for seg in segments),
        segments=tuple(segments), mean_diff=mean, std_diff=std, z=z, p_value=p, significant=p < ALPHA)


def compare_files(path_a: str | Path, path_b: str | Path) -> MapssweResult:
    """MAPSSWE between two hyps.jsonl files (what `allinone compare` runs)."""
    return mapsswe(load_hypotheses(path_a), load_hypotheses(path_b))


def format_comparison(result: MapssweResult, label_a: str = "", label_b: str = "") -> str:
    """Human-readable report of a MAPSSWE result; `label_a`/`label_b` (e.g. file names) follow the subnets."""
    def system(tag: str, name: str, errors: int, wer: float, label: str) -> str:
        return (f"{tag}  {name}  WER {wer:.2%} ({errors} errors / {result.ref_words} words)"
                + (f"  {label}" if label else ""))

    z = "undefined" if result.z is None else f"{result.z:.3f}"
    verdict = "significant" if result.significant else "not significant"
    lines = [system("A", result.system_a, result.errors_a, result.wer_a, label_a),
             system("B", result.system_b, result.errors_b, result.wer_b, label_b),
             f"MAPSSWE over {result.n_utterances} utterances: {result.n_segments} segments "
             f"(bounded by >= {MIN_CORRECT_BOUNDARY} words both systems got right)",
             f"mean errors per segment, A - B: {result.mean_diff:+.3f} (std {result.std_diff:.3f})",
             f"z = {z}, p = {result.p_value:.4g}: {verdict} at {result.alpha:g}"
             + (f" ({result.better.upper()} makes fewer errors)" if result.better else "")]
    if 0 < result.n_segments < FEW_SEGMENTS:
        lines.append(f"note: only {result.n_segments} segments; the normal approximation behind p needs "
                     f"{FEW_SEGMENTS} or more to be reliable")
    return "\n".join(lines)
