"""The latency model's least-squares fit (see `allinone.latency` for the model):
measurements -> overhead and throughput per precision, and the profile latency model made from a fit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from allinone.errors import BadInputError
from allinone.profiles import (PRECISION_OF_BITS, FitQuality, LatencyModel, MeasuredDevice, SizeTerm, Throughput,
                               mac_ms, size_feature)

__all__ = ["LatencyPoint", "LatencyFit", "fit_latency_model", "leave_one_out_errors", "fitted_latency_model",
           "MIN_UNCERTAINTY_PCT"]

MIN_UNCERTAINTY_PCT = 10  # run-to-run spread of a timed call on a busy CPU; a fit never claims better


@dataclass(frozen=True)
class LatencyPoint:
    """One measured call: a system of `macs_per_second` at `weight_bits` took `ms` on `audio_s` seconds."""

    subnet: str
    weight_bits: int
    macs_per_second: float
    audio_s: float
    ms: float
    blocks: int = 0  # encoder blocks (depth); only the per-block fit reads it

    @property
    def macs(self) -> float:
        # macs_per_second is quoted at 10 s; attention's share grows with length, a small effect at 0.5-30 s.
        return self.macs_per_second * self.audio_s


@dataclass(frozen=True)
class LatencyFit:
    """Fitted latency-model parameters and how well they explain the points they came from."""

    overhead_ms: float
    effective_gmacs: dict[int, float]  # weight bits -> GMAC/s the encoder reached
    overhead_fitted: bool  # False: the points could not separate it, the prior profile's value was kept
    points: tuple[LatencyPoint, ...]
    # ms per encoder block per second of audio, for work MACs do not count (element-wise ops, dispatch);
    # fitted with per_block=True, else the fixed value given (0 by default). Profiles store it as
    # latency_model.block_ms_per_s.
    block_ms_per_s: float = 0.0
    block_fitted: bool = False
    # weight bits -> ms per audio second per sqrt(GMAC per audio second) (`size_feature`); fitted with
    # size_term=True, else the fixed values given (none by default). Profiles store it as latency_model.size_term_ms.
    size_term_ms: dict[int, float] = field(default_factory=dict)
    size_fitted: bool = False

    def predict_ms(self, macs: float, weight_bits: int, *, blocks: int = 0, audio_s: float = 0.0) -> float:
        return (self.overhead_ms + self.block_ms_per_s * blocks * audio_s
                + mac_ms(macs, audio_s, self.effective_gmacs[weight_bits], self.size_term_ms.get(weight_bits, 0.0)))

    def predict(self, point: LatencyPoint) -> float:
        return self.predict_ms(point.macs, point.weight_bits, blocks=point.blocks, audio_s=point.audio_s)

    def relative_errors(self) -> list[float]:
        """(predicted - measured) / measured for every point."""
        return [(self.predict(p) - p.ms) / p.ms for p in self.points]

    @property
    def max_abs_error(self) -> float:
        return max(abs(e) for e in self.relative_errors())


def _columns(points: Sequence[LatencyPoint], bits: list[int], free_overhead: bool, per_block: bool,
             per_size: bool = False) -> list[list[float]]:
    """Design matrix columns of y = [o] + [c * blocks * audio_s] + M * x_b [+ s_b * size_feature], one MAC
    column (and one size column) per precision."""
    cols = [[1.0] * len(points)] if free_overhead else []
    if per_block:
        cols.append([float(p.blocks) * p.audio_s for p in points])
    cols += [[p.macs if p.weight_bits == b else 0.0 for p in points] for b in bits]
    if per_size:
        cols += [[size_feature(p.macs, p.audio_s) if p.weight_bits == b else 0.0 for p in points] for b in bits]
    return cols


def _solve(points: Sequence[LatencyPoint], bits: list[int], overhead_ms: float | None, per_block: bool,
           fixed_block: float = 0.0, per_size: bool = False,
           fixed_size: dict[int, float] | None = None) -> tuple[float, float, list[float], dict[int, float]]:
    """Weighted least squares; `overhead_ms` given = overhead fixed; without `per_block` the block term is
    `fixed_block`, without `per_size` the size term is `fixed_size`. Returns (overhead, block term, [x_b],
    {bits: size term})."""
    import numpy as np

    y = np.array([p.ms for p in points])
    known = (overhead_ms or 0.0) + (0.0 if per_block else fixed_block * np.array([p.blocks * p.audio_s
                                                                                  for p in points]))
    if not per_size and fixed_size:
        known = known + np.array([fixed_size.get(p.weight_bits, 0.0) * size_feature(p.macs, p.audio_s)
                                  for p in points])
    a = np.array(_columns(points, bits, overhead_ms is None, per_block, per_size)).T / y[:, None]  # relative
    x, *_ = np.linalg.lstsq(a, (y - known) / y, rcond=None)
    values = [float(v) for v in x]
    overhead = values.pop(0) if overhead_ms is None else overhead_ms
    block = values.pop(0) if per_block else fixed_block
    inverse = values[:len(bits)]
    size = dict(zip(bits, values[len(bits):])) if per_size else {b: v for b, v in (fixed_size or {}).items()
                                                                   if b in bits}
    return overhead, block, inverse, size


def _rank(points: Sequence[LatencyPoint], bits: list[int], per_block: bool, per_size: bool = False) -> int:
    import numpy as np

    a = np.array(_columns(points, bits, True, per_block, per_size)).T
    return int(np.linalg.matrix_rank(a / np.abs(a).max(axis=0)))  # columns scaled: MACs are ~1e9, the rest ~1


def fit_latency_model(points: Iterable[LatencyPoint], *, prior_overhead_ms: float = 0.0,
                      per_block: bool = False, fixed_block_ms_per_s: float = 0.0, size_term: bool = False,
                      fixed_size_term_ms: dict[int, float] | None = None) -> LatencyFit:
    """Fit overhead_ms and one effective throughput per precision present in `points` (and, with `per_block`,
    a cost per encoder block per second of audio; without it that cost is `fixed_block_ms_per_s`, e.g. a
    profile's, kept when a few reports cannot separate it; with `size_term`, one size-term coefficient per
    precision (`size_feature`), else `fixed_size_term_ms`).

    The overhead is fitted only when the points can separate it from the rest (two different MAC counts at
    some precision) and it comes out non-negative; otherwise `prior_overhead_ms` is kept, or 0 when the calls
    were faster than that overhead alone."""
    points = tuple(points)
    if not points:
        raise BadInputError("latency fit: no measurements; expected at least one timed call")
    bad = [p for p in points if p.ms <= 0 or p.macs <= 0]
    if bad:
        raise BadInputError(f"latency fit: {bad[0].subnet}: expected positive latency and MACs, got "
                            f"{bad[0].ms} ms and {bad[0].macs:.3g} MACs")
    bits = sorted({p.weight_bits for p in points}, reverse=True)
    n_unknowns = 1 + per_block + len(bits) * (2 if size_term else 1)
    fitted = False
    fixed_block, fixed_size = fixed_block_ms_per_s, dict(fixed_size_term_ms or {})
    if per_block and _rank(points, bits, True) < 1 + len(bits):  # depth never varies at fixed MACs: no block term
        raise BadInputError(f"latency fit: {len(points)} timed calls cannot separate a per-block cost; expected "
                            f"systems of different depths and widths")
    few = [b for b in bits if len({p.macs_per_second for p in points if p.weight_bits == b}) < 3]
    if size_term and (few or _rank(points, bits, per_block, True) < n_unknowns - 1):
        raise BadInputError(f"latency fit: {len(points)} timed calls cannot separate a size term; expected three "
                            f"or more systems of different sizes per precision")
    solve = dict(per_block=per_block, fixed_block=fixed_block, per_size=size_term, fixed_size=fixed_size)
    if _rank(points, bits, per_block, size_term) == n_unknowns:
        overhead, block, inverse, size = _solve(points, bits, None, **solve)
        fitted = overhead >= 0 and all(v > 0 for v in inverse) and block >= 0
    if not fitted:
        overhead, block, inverse, size = _solve(points, bits, prior_overhead_ms, **solve)
        if any(v <= 0 for v in inverse) and prior_overhead_ms > 0:
            # Calls faster than the prior overhead: that prior is wrong for this device, so assume none.
            overhead, block, inverse, size = _solve(points, bits, 0.0, **solve)
    if block < 0:  # a negative cost per block is noise (deep systems are not cheaper per block): leave it out
        return fit_latency_model(points, prior_overhead_ms=prior_overhead_ms, size_term=size_term,
                                 fixed_size_term_ms=fixed_size_term_ms)
    if any(v <= 0 for v in inverse):
        worst = bits[min(range(len(bits)), key=lambda i: inverse[i])]
        raise BadInputError(f"latency fit: {worst}-bit measurements are faster than the overhead alone allows; "
                            f"expected latencies above overhead_ms {overhead:g}")
    fit = LatencyFit(overhead, {b: 1.0 / (x * 1e6) for b, x in zip(bits, inverse)}, fitted, points, block,
                     per_block, size, size_term)
    if size_term:
        for p in points:  # a curve that costs nothing at a timed system explains nothing: refuse it
            if mac_ms(p.macs, p.audio_s, fit.effective_gmacs[p.weight_bits], size[p.weight_bits]) <= 0:
                raise BadInputError(f"latency fit: the size term leaves no MAC cost at {p.subnet}; expected "
                                    f"systems whose latency grows with their MACs")
    return fit


def leave_one_out_errors(points: Sequence[LatencyPoint], *, per_block: bool = False,
                         prior_overhead_ms: float = 0.0, size_term: bool = False) -> list[float]:
    """(predicted - measured) / measured of each point predicted by a fit to all the others: the error to
    expect for a system that was never timed. Every precision needs two points at least (three with
    `size_term`)."""
    out = []
    for i, point in enumerate(points):
        others = list(points[:i]) + list(points[i + 1:])
        fit = fit_latency_model(others, prior_overhead_ms=prior_overhead_ms, per_block=per_block,
                                size_term=size_term)
        if point.weight_bits not in fit.effective_gmacs:
            raise BadInputError(f"leave-one-out: {point.subnet} is the only {point.weight_bits}-bit system; "
                                f"expected two or more per precision")
        out.append((fit.predict(point) - point.ms) / point.ms)
    return out


def fitted_latency_model(fit: LatencyFit, prior: LatencyModel, *, source: str, date: str,
                         citations: Sequence[str], uncertainty_pct: float | None = None,
                         device: MeasuredDevice | None = None,
                         quality: FitQuality | None = None) -> tuple[LatencyModel, list[str]]:
    """A profile latency model from `fit`; precisions the fit did not measure keep the prior's effective
    throughput scaled by the geometric-mean ratio fitted / prior of the measured ones. `uncertainty_pct`
    defaults to the fit's largest error (at least MIN_UNCERTAINTY_PCT). `device` and `quality` (default: the
    fit's own error over its points) are recorded with the model.

    Returns the model and one note per precision saying where its figure came from."""
    ratios = []
    for bits, gmacs in fit.effective_gmacs.items():
        try:
            ratios.append(gmacs / prior.effective_gmacs(bits))
        except BadInputError:  # the prior had no figure for these bits
            pass
    scale = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    throughput, notes = {}, []
    for bits, precision in PRECISION_OF_BITS.items():
        if bits in fit.effective_gmacs:
            throughput[precision] = round(fit.effective_gmacs[bits], 2)
            n = sum(p.weight_bits == bits for p in fit.points)
            notes.append(f"{precision}: fitted to {n} timed call{'s' if n != 1 else ''}")
        elif getattr(prior.throughput_gmacs, precision) is not None and scale is not None:
            throughput[precision] = round(prior.effective_gmacs(bits) * scale, 2)
            notes.append(f"{precision}: not measured; prior figure scaled by {scale:.2f} like the measured ones")
        elif getattr(prior.throughput_gmacs, precision) is not None:
            throughput[precision] = getattr(prior.throughput_gmacs, precision)
    uncertainty = uncertainty_pct if uncertainty_pct is not None else \
        max(MIN_UNCERTAINTY_PCT, math.ceil(100 * fit.max_abs_error))
    if quality is None:
        quality = FitQuality(systems=len({p.subnet for p in fit.points}),
                             max_error_pct=round(100 * fit.max_abs_error, 1))
    model = LatencyModel(overhead_ms=round(fit.overhead_ms, 2), throughput_gmacs=Throughput(**throughput),
                         workload_factor=1.0, source=source, citations=tuple(citations),
                         uncertainty_pct=uncertainty, date=date,
                         block_ms_per_s=round(fit.block_ms_per_s, 4) if fit.block_ms_per_s else None,
                         size_term_ms=_size_term(fit, prior, throughput), device=device, fit=quality)
    if fit.block_fitted:
        notes.append(f"block_ms_per_s: fitted ({fit.block_ms_per_s:.3g} ms per block per second of audio)")
    elif fit.block_ms_per_s:
        notes.append(f"block_ms_per_s: kept at {fit.block_ms_per_s:g} (too few systems to refit it)")
    if fit.size_term_ms:
        terms = ", ".join(f"{PRECISION_OF_BITS[b]} {v:+.3g}" for b, v in fit.size_term_ms.items())
        notes.append(f"size_term_ms: {'fitted' if fit.size_fitted else 'kept'} ({terms} ms per audio second per "
                     f"sqrt(GMAC/s))")
    if not fit.overhead_fitted:
        notes.append(f"overhead_ms: kept at {fit.overhead_ms:g} (the measurements cannot separate it)")
    return model, notes


def _size_term(fit: LatencyFit, prior: LatencyModel, throughput: dict[str, float]) -> SizeTerm | None:
    """The profile's size term: the fit's for the precisions it measured, the prior's for those whose
    throughput came from the prior."""
    values = {PRECISION_OF_BITS[b]: round(v, 4) for b, v in fit.size_term_ms.items() if b in fit.effective_gmacs}
    if prior.size_term_ms is not None:
        for bits, precision in PRECISION_OF_BITS.items():
            kept = getattr(prior.size_term_ms, precision)
            if bits not in fit.effective_gmacs and precision in throughput and kept is not None:
                values[precision] = kept
    return SizeTerm(**values) if values else None
