"""Selection: the lowest-WER nested system that meets every constraint of a device profile, and why each
other system lost.

Constraints are checked in a fixed order and the first one a system fails is its reason: allowed weight
bits, model bytes, peak memory (model + planned activations + runtime overhead), then latency (real-time
factor at the profile's reference length: measured, when the catalog holds a report from the profile's own
device at that length, else predicted by the profile's latency model). A bundle that will carry a word LM
(`build --lm`) is selected with its `DecoderCost`: the LM files count with the model's bytes and the
beam-search decoder's predicted memory with the peak (`allinone.memory`). Among the systems that
pass, the lowest WER wins; ties go to the smaller model, then to the smaller subnet id, so the answer never
depends on catalog order.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allinone.catalog import CATALOG_FILE, Catalog, CatalogEntry, MeasuredLatency, load_catalog
from allinone.errors import BadInputError, NoFitError
from allinone.files import read_json
from allinone.memory import DecoderCost, predict_peak_bytes
from allinone.profiles import MIB, DeviceProfile

__all__ = ["CONSTRAINTS", "Candidate", "Selection", "select", "select_for_checkpoint", "checkpoint_catalog",
           "explain_table", "selection_to_json", "predicted_latency", "slower_precisions"]

CONSTRAINTS = ("weight_bits", "model_bytes", "peak_memory", "latency")  # checked in this order
SELECTED, WER_UNKNOWN, HIGHER_WER, TIE = "selected", "wer_unknown", "higher_wer", "tie"


@dataclass(frozen=True)
class Candidate:
    """One catalog entry judged against a profile. `verdict` is 'selected', a name from CONSTRAINTS (the first
    constraint it failed), 'higher_wer', 'tie' (same WER, lost the tie-break) or 'wer_unknown'."""

    entry: CatalogEntry
    model_bytes: int  # the program's (.pte, or weights before lowering); an LM's bytes are `lm_bytes`
    peak_bytes: int  # model + activations (0 when not measured) + runtime overhead + decoder_bytes
    latency_ms: float | None  # None when not measured and the profile has no throughput for these bits
    rtf: float | None
    verdict: str
    reason: str
    measured: MeasuredLatency | None = None  # the device measurement latency_ms comes from, if any
    lm_bytes: int = 0  # the word LM's files the bundle will carry (counted against max_model_mib with the model)
    decoder_bytes: int = 0  # the beam-search decoder's predicted memory (in peak_bytes)

    @property
    def latency_kind(self) -> str:
        return "measured" if self.measured is not None else "predicted"


@dataclass(frozen=True)
class Selection:
    """The chosen system and every candidate, the chosen one first, the rest most accurate first."""

    profile: DeviceProfile
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    decoder: DecoderCost | None = None  # the word LM and beam the bundle will decode with, if any

    def to_dict(self) -> dict[str, Any]:
        chosen, profile = self.chosen, self.profile
        out = {
            "format_version": 1,
            "profile": profile.name,
            "subnet": chosen.entry.subnet,
            "weight_bits": chosen.entry.weight_bits,
            "wer": chosen.entry.wer,
            "params": chosen.entry.params,
            "bytes": chosen.model_bytes,
            "bytes_from": "pte" if chosen.entry.pte_bytes is not None else "weights",
            "peak_bytes": chosen.peak_bytes,
            "latency": _latency_json(chosen, profile),
            "constraints": {
                "weight_bits": list(profile.weight_bits),
                "max_model_bytes": int(profile.memory.max_model_mib * MIB),
                "max_peak_bytes": int(profile.memory.max_peak_rss_mib * MIB),
                "max_rtf": profile.latency.max_rtf,
            },
            "candidates": [
                {"subnet": c.entry.subnet, "weight_bits": c.entry.weight_bits, "wer": c.entry.wer,
                 "bytes": c.model_bytes, "peak_bytes": c.peak_bytes, "rtf": c.rtf, "latency_kind": c.latency_kind,
                 "verdict": c.verdict, "reason": c.reason}
                for c in self.candidates
            ],
        }
        if self.decoder is not None:  # only then: a selection without an LM prints as it always did
            out["decoder"] = self.decoder.to_dict()
        return out

    def bundle_latency(self) -> dict[str, Any]:
        """The manifest's `latency` block: the profile's prediction (never a measurement) and the latency
        measured on this profile's own device, when the catalog holds one; either may be None."""
        c, profile = self.chosen, self.profile
        reference = profile.latency.reference_audio_s
        predicted = predicted_latency(c.entry, profile)
        if predicted is not None:
            predicted = {"ms": predicted[0], "rtf": predicted[1], "reference_audio_s": reference, "measured": False,
                         "model": _model_json(profile), "profile": profile.name}
        measured = None
        if c.measured is not None:
            device = _device_json(c.measured)
            measured = {"ms": c.latency_ms, "rtf": c.rtf, "reference_audio_s": reference, "device": device,
                        "date": device["date"], "report": device["report"]}
        return {"predicted": predicted, "measured": measured}


def predicted_latency(entry: CatalogEntry, profile: DeviceProfile) -> tuple[float, float] | None:
    """(ms, rtf) the profile's latency model predicts at its reference length; None without a throughput
    figure for the entry's bits."""
    reference = profile.latency.reference_audio_s
    try:
        ms = profile.predict_latency_ms(entry.macs_per_second * reference, entry.weight_bits,
                                        blocks=_blocks(entry, profile), audio_s=reference)
    except BadInputError:  # the profile has no throughput for these bits
        return None
    return ms, ms / (reference * 1000.0)


def _blocks(entry: CatalogEntry, profile: DeviceProfile) -> int:
    """Encoder blocks of the entry's system (its id's depth), for a profile's per-block latency term."""
    from allinone.spec import SubnetSpec

    return SubnetSpec.from_id(entry.subnet).depth if profile.latency_model.block_ms_per_s else 0


def slower_precisions(profile: DeviceProfile, macs_per_second: float | None = None) -> dict[int, int]:
    """{bits: higher bits that run faster} for each allowed precision that a measured or calibrated latency
    model says is slower than a higher one (e.g. {4: 8} on an x86 CPU without VNNI): the fastest such higher
    precision. With a size term the order can change with the system's size, so it is judged at
    `macs_per_second` (when given). Published and estimated figures are guesses, so they never claim this."""
    model = profile.latency_model
    if model.source not in ("measured", "calibrated"):
        return {}
    seconds = profile.latency.reference_audio_s

    def speed(bits: int) -> float:  # higher is faster
        if model.size_term_ms is None or macs_per_second is None:
            return model.effective_gmacs(bits)
        macs = macs_per_second * seconds
        return -(model.predict_ms(macs, bits, audio_s=seconds) - model.overhead_ms)

    out = {}
    for bits in profile.weight_bits:
        faster = [b for b in profile.weight_bits if b > bits and speed(b) > speed(bits)]
        if faster:
            out[bits] = max(faster, key=speed)
    return out


def _slower_note(bits: int, slower: dict[int, int], profile: DeviceProfile) -> str:
    if bits not in slower:
        return ""
    return f"; w{bits} slower than w{slower[bits]} on this device ({profile.latency_model.source})"


def _device_json(m: MeasuredLatency) -> dict[str, Any]:
    return {"profile": m.profile, "machine": m.machine, "cpu": m.cpu, "runner": m.runner, "threads": m.threads,
            "date": m.date, "report": m.report}


def _latency_json(c: Candidate, profile: DeviceProfile) -> dict[str, Any]:
    out = {"ms": c.latency_ms, "rtf": c.rtf, "reference_audio_s": profile.latency.reference_audio_s,
           "measured": c.measured is not None, "kind": c.latency_kind}
    if c.measured is not None:  # only a report from this profile's device gets here (see _predict)
        out["device"] = _device_json(c.measured)
    else:
        out["model"] = _model_json(profile)
    # The prediction is always given too, so a bundle can carry both and a reader can compare them.
    predicted = predicted_latency(c.entry, profile)
    out["predicted"] = None if predicted is None else {"ms": predicted[0], "rtf": predicted[1],
                                                       "model": _model_json(profile)}
    return out


def _model_json(profile: DeviceProfile) -> dict[str, Any]:
    model = profile.latency_model
    return {"profile": profile.name, "source": model.source, "uncertainty_pct": model.uncertainty_pct}


@dataclass(frozen=True)
class _Failure:
    constraint: str
    reason: str  # what is wrong, for the table
    relax: str  # what budget change would let it pass, for the no-fit message
    excess: float  # how far over the budget, relative; ranks near misses


def _round_up(value: float, step: float) -> float:
    out = math.ceil(value / step) * step
    return round(out if out >= value else out + step, 6)


def _predict(entry: CatalogEntry, profile: DeviceProfile) -> tuple[float | None, float | None,
                                                                    MeasuredLatency | None]:
    """(latency_ms, rtf, measurement): measured on the profile's device at its reference length when the
    catalog has it (reports are checked against the device when added), else the profile's prediction."""
    measured = entry.measured_on(profile.name, profile.latency.reference_audio_s)
    if measured is not None:
        return measured.p50_ms, measured.rtf, measured
    predicted = predicted_latency(entry, profile)
    if predicted is None:  # no throughput figure for these bits: only possible for bits the profile disallows
        return None, None, None
    return predicted[0], predicted[1], None


def _peak_bytes(entry: CatalogEntry, profile: DeviceProfile, decoder: DecoderCost | None = None) -> int:
    return predict_peak_bytes(entry.model_bytes, entry.activation_bytes, profile,
                              decoder.peak_bytes if decoder is not None else 0)


def _failures(entry: CatalogEntry, profile: DeviceProfile, rtf: float | None, kind: str,
              decoder: DecoderCost | None = None) -> list[_Failure]:
    """Every constraint the entry fails, in CONSTRAINTS order."""
    out, mem, lat = [], profile.memory, profile.latency
    lm_bytes = decoder.lm_bytes if decoder is not None else 0
    if entry.weight_bits not in profile.weight_bits:
        allowed = ", ".join(map(str, profile.weight_bits))
        out.append(_Failure("weight_bits", f"{entry.weight_bits}-bit weights not allowed (weight_bits: {allowed})",
                            f"add {entry.weight_bits} to weight_bits", 1.0))
    model_mib = (entry.model_bytes + lm_bytes) / MIB
    if model_mib > mem.max_model_mib:
        what = "model + LM" if lm_bytes else "model"
        out.append(_Failure("model_bytes", f"{what} {model_mib:.1f} MiB > memory.max_model_mib {mem.max_model_mib:g}",
                            f"memory.max_model_mib to >= {_round_up(model_mib, 0.1):g}",
                            model_mib / mem.max_model_mib - 1))
    peak_mib = _peak_bytes(entry, profile, decoder) / MIB
    if peak_mib > mem.max_peak_rss_mib:
        unknown = " (activations not measured, counted as 0)" if entry.activation_bytes is None else ""
        if decoder is not None:
            unknown += f" (decoder {decoder.peak_bytes / MIB:.1f} MiB included)"
        out.append(_Failure("peak_memory",
                            f"peak {peak_mib:.1f} MiB > memory.max_peak_rss_mib {mem.max_peak_rss_mib:g}{unknown}",
                            f"memory.max_peak_rss_mib to >= {_round_up(peak_mib, 0.1):g}",
                            peak_mib / mem.max_peak_rss_mib - 1))
    if rtf is None:
        out.append(_Failure("latency", f"no throughput figure for {entry.weight_bits}-bit weights",
                            f"add latency_model.throughput_gmacs for {entry.weight_bits}-bit weights", 1.0))
    elif rtf > lat.max_rtf:
        out.append(_Failure("latency", f"RTF {rtf:.3f} ({kind}) > latency.max_rtf {lat.max_rtf:g} "
                                       f"at {lat.reference_audio_s:g} s",
                            f"latency.max_rtf to >= {_round_up(rtf, 0.001):g}", rtf / lat.max_rtf - 1))
    return out


def _accuracy_order(c: Candidate) -> tuple:
    wer = c.entry.wer
    return (wer is None, wer if wer is not None else 0.0, c.model_bytes, c.entry.subnet)


def select(catalog: Catalog, profile: DeviceProfile, decoder: DecoderCost | None = None) -> Selection:
    """The lowest-WER system meeting every constraint of `profile`; NoFitError naming the nearest miss if none.
    With `decoder` (`allinone.memory.decoder_cost`), its LM bytes and decoder memory count in the budgets."""
    if not catalog.entries:
        raise BadInputError("catalog: no systems in it; expected at least one entry")
    lm_bytes, decoder_bytes = (decoder.lm_bytes, decoder.peak_bytes) if decoder is not None else (0, 0)
    judged: list[tuple[Candidate, list[_Failure]]] = []
    for entry in catalog.entries:
        latency_ms, rtf, measured = _predict(entry, profile)
        failures = _failures(entry, profile, rtf, "measured" if measured else "predicted", decoder)
        verdict, reason = (failures[0].constraint, failures[0].reason) if failures else ("", "")
        judged.append((Candidate(entry, entry.model_bytes, _peak_bytes(entry, profile, decoder), latency_ms, rtf,
                                 verdict, reason, measured, lm_bytes, decoder_bytes), failures))

    fits = [c for c, failures in judged if not failures]
    ranked = sorted((c for c in fits if c.entry.wer is not None), key=_accuracy_order)
    if not ranked:
        _raise_no_fit(catalog, profile, judged, fitting=len(fits), decoder=decoder)
    best = ranked[0]
    note = _slower_note(best.entry.weight_bits, slower_precisions(profile, best.entry.macs_per_second), profile)
    candidates = [_replace_verdict(best, SELECTED, "selected: lowest WER that fits" + note)]
    for c in sorted((c for c, _ in judged if c is not best), key=_accuracy_order):
        verdict, reason = (c.verdict, c.reason) if c.verdict else _loser(c, best)
        if verdict != "weight_bits":  # a disallowed precision's speed is beside the point
            reason += _slower_note(c.entry.weight_bits, slower_precisions(profile, c.entry.macs_per_second), profile)
        candidates.append(_replace_verdict(c, verdict, reason))
    return Selection(profile, candidates[0], tuple(candidates), decoder)


def _replace_verdict(c: Candidate, verdict: str, reason: str) -> Candidate:
    return dataclasses.replace(c, verdict=verdict, reason=reason)


def _loser(c: Candidate, best: Candidate) -> tuple[str, str]:
    """Why a system that fits lost to the chosen one."""
    if c.entry.wer is None:
        return WER_UNKNOWN, "fits; WER not measured"
    if c.entry.wer > best.entry.wer:
        return HIGHER_WER, f"fits; higher WER ({c.entry.wer:.2%} vs {best.entry.wer:.2%})"
    if c.model_bytes > best.model_bytes:
        return TIE, f"fits; same WER, larger model ({c.model_bytes / MIB:.1f} vs {best.model_bytes / MIB:.1f} MiB)"
    return TIE, f"fits; same WER and size, id sorts after {best.entry.subnet}"


def _raise_no_fit(catalog: Catalog, profile: DeviceProfile, judged: list, fitting: int,
                  decoder: DecoderCost | None = None) -> None:
    n = len(catalog.entries)
    if fitting:
        raise BadInputError(f"catalog: {fitting} of {n} systems fit profile {profile.name!r} but none has a "
                            f"measured WER; expected dev-set WER in the catalog before selecting")
    # Nearest miss: fewest failed constraints, then the smallest total overshoot.
    c, failures = min(judged, key=lambda cf: (len(cf[1]), sum(f.excess for f in cf[1]),
                                              cf[0].model_bytes, cf[0].entry.subnet))
    with_lm = "" if decoder is None else f" with LM {decoder.lm_dir} at beam {decoder.beam}"
    raise NoFitError(f"no system fits profile {profile.name!r}{with_lm} ({n} in the catalog); nearest miss "
                     f"{c.entry.subnet}: {'; '.join(f.reason for f in failures)}; "
                     f"relax {' and '.join(f.relax for f in failures)}")


def explain_table(selection: Selection) -> str:
    """A text table of every candidate and the first constraint it failed, the chosen one marked '>'."""
    p = selection.profile
    lines = [f"profile {p.name} ({p.target}, {p.backend}, {p.threads} threads): weight bits "
             f"{'/'.join(map(str, p.weight_bits))}; model <= {p.memory.max_model_mib:g} MiB; "
             f"peak <= {p.memory.max_peak_rss_mib:g} MiB; RTF <= {p.latency.max_rtf:g} at "
             f"{p.latency.reference_audio_s:g} s"]
    m = p.latency_model
    if m.size_term_ms is None:
        for bits, faster in sorted(slower_precisions(p).items()):
            lines.append(f"w{bits} is slower than w{faster} on this device ({m.source}: {m.effective_gmacs(bits):.1f} "
                         f"vs {m.effective_gmacs(faster):.1f} effective GMAC/s{_isa_words(p)})")
    else:  # the order depends on size: say it at the chosen system's
        chosen = selection.chosen.entry
        for bits, faster in sorted(slower_precisions(p, chosen.macs_per_second).items()):
            lines.append(f"w{bits} is slower than w{faster} on this device at {chosen.subnet}'s size "
                         f"({chosen.macs_per_second / 1e6:.0f} MMAC/s; {m.source} latency model with a size term"
                         f"{_isa_words(p)})")
    d = selection.decoder
    if d is not None:
        lines.append(f"word LM {d.lm_dir}: {d.lm_bytes / MIB:.2f} MiB of files counted with each model's bytes; "
                     f"beam-search decoder at beam {d.beam}: {d.peak_bytes / MIB:.1f} MiB predicted, counted in each "
                     f"peak")
    lm_columns = ("+LM MiB", "decoder MiB") if d is not None else ()
    header = ("", "subnet", "bits", "WER", "model MiB", *lm_columns, "peak MiB", "RTF", "result")
    rows = [header]
    for c in selection.candidates:
        lm_cells = (f"{c.lm_bytes / MIB:.2f}", f"{c.decoder_bytes / MIB:.1f}") if d is not None else ()
        rows.append((">" if c.verdict == SELECTED else "", c.entry.subnet, str(c.entry.weight_bits),
                     "-" if c.entry.wer is None else f"{c.entry.wer:.2%}",
                     f"{c.model_bytes / MIB:.1f}" + ("" if c.entry.pte_bytes is not None else "w"), *lm_cells,
                     f"{c.peak_bytes / MIB:.1f}" + ("" if c.entry.activation_bytes is not None else "?"),
                     "-" if c.rtf is None else f"{c.rtf:.3f}" + ("m" if c.measured is not None else "*"),
                     c.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = set(range(2, len(header) - 1))  # numbers align right
    for r in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    model = p.latency_model
    lines.append(f"*: RTF predicted by the profile's latency model ({model.source}, ±{model.uncertainty_pct:g}%), "
                 f"not measured. m: measured on the {p.name} device (from its report). w: weight bytes (no .pte "
                 f"yet). ?: activations not measured, counted as 0.")
    return "\n".join(lines)


def _isa_words(profile: DeviceProfile) -> str:
    if profile.isa is None:
        return ""
    return f"; CPU features {', '.join(profile.isa) or 'none recorded'}"


def selection_to_json(selection: Selection) -> str:
    """The selection for build scripts: subnet, wer, bytes, latency (measured or predicted) and every candidate."""
    return json.dumps(selection.to_dict(), indent=2, allow_nan=False)


def checkpoint_catalog(checkpoint: str | Path) -> Catalog:
    """CHECKPOINT/catalog.json, refused when it is missing or was measured on other weights (its WERs would
    be another model's: a re-pack or retraining keeps the file until `allinone catalog` runs again)."""
    path = Path(checkpoint) / CATALOG_FILE
    if not Path(checkpoint).is_dir():
        raise BadInputError(f"checkpoint {checkpoint}: not a directory; expected a checkpoint directory")
    remake = f"`allinone catalog --checkpoint {checkpoint} --manifest DEV`"
    if not path.is_file():
        raise BadInputError(f"{path}: no catalog yet; expected one made by {remake} (it measures every system's "
                            f"size and dev-set WER)")
    catalog = load_catalog(path)
    # config.json read as plain JSON: selecting must not import torch (allinone.checkpoint does)
    config = read_json(Path(checkpoint) / "config.json", "a checkpoint config (config.json)")
    holds = config.get("weights_sha256") if isinstance(config, dict) else None
    measured_on = catalog.meta.get("weights_sha256")
    if measured_on is not None and measured_on != holds:  # a hand-written catalog has no meta: taken as it is
        raise BadInputError(f"{path}: measured on other weights (sha256 {measured_on[:12]}..., the checkpoint "
                            f"holds {holds[:12]}...); expected its own catalog: run {remake} again")
    return catalog


def select_for_checkpoint(checkpoint: str | Path, profile: DeviceProfile,
                          decoder: DecoderCost | None = None) -> Selection:
    """`select` over the catalog stored beside a checkpoint."""
    return select(checkpoint_catalog(checkpoint), profile, decoder)
