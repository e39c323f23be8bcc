"""The latency model's least-squares fit (see `allinone.latency` for the model):
measurements -> overhead and throughput per precision, and the profile latency model made from a fit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from allinone.errors import BadInputError
from allinone.profiles import PRECISION_OF_BITS, FitQuality, LatencyModel, MeasuredDevice, Throughput

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

    def predict_ms(self, macs: float, weight_bits: int, *, blocks: int = 0, audio_s: float = 0.0) -> float:
        return (self.overhead_ms + self.block_ms_per_s * blocks * audio_s
                + macs / (self.effective_gmacs[weight_bits] * 1e6))

    def predict(self, point: LatencyPoint) -> float:
        return self.predict_ms(point.macs, point.weight_bits, blocks=point.blocks, audio_s=point.audio_s)

    def relative_errors(self) -> list[float]:
        """(predicted - measured) / measured for every point."""
        return [(self.predict(p) - p.ms) / p.ms for p in self.points]

    @property
    def max_abs_error(self) -> float:
        return max(abs(e) for e in self.relative_errors())


def _columns(points: Sequence[LatencyPoint], bits: list[int], free_overhead: bool, per_block: bool) -> list[list[float]]:
    """Design matrix columns of y = [o] + [c * blocks * audio_s] + M * x_b, one MAC column per precision."""
    cols = [[1.0] * len(points)] if free_overhead else []
    if per_block:
        cols.append([float(p.blocks) * p.audio_s for p in points])
    return cols + [[p.macs if p.weight_bits == b else 0.0 for p in points] for b in bits]


def _solve(points: Sequence[LatencyPoint], bits: list[int], overhead_ms: float | None,
           per_block: bool, fixed_block: float = 0.0) -> tuple[float, float, list[float]]:
    """Weighted least squares; `overhead_ms` given = overhead fixed; without `per_block` the block term is
    `fixed_block`. Returns (overhead, block term, [x_b])."""
    import numpy as np

    y = np.array([p.ms for p in points])
    known = (overhead_ms or 0.0) + (0.0 if per_block else fixed_block * np.array([p.blocks * p.audio_s
                                                                                  for p in points]))
    a = np.array(_columns(points, bits, overhead_ms is None, per_block)).T / y[:, None]  # rows / y: relative
    x, *_ = np.linalg.lstsq(a, (y - known) / y, rcond=None)
    values = [float(v) for v in x]
    overhead = values.pop(0) if overhead_ms is None else overhead_ms
    block = values.pop(0) if per_block else fixed_block
    return overhead, block, values


def _rank(points: Sequence[LatencyPoint], bits: list[int], per_block: bool) -> int:
    import numpy as np

    a = np.array(_columns(points, bits, True, per_block)).T
    return int(np.linalg.matrix_rank(a / np.abs(a).max(axis=0)))  # columns scaled: MACs are ~1e9, the rest ~1


def fit_latency_model(points: Iterable[LatencyPoint], *, prior_overhead_ms: float = 0.0,
                      per_block: bool = False, fixed_block_ms_per_s: float = 0.0) -> LatencyFit:
    """Fit overhead_ms and one effective throughput per precision present in `points` (and, with `per_block`,
    a cost per encoder block per second of audio; without it that cost is `fixed_block_ms_per_s`, e.g. a
    profile's, kept when a few reports cannot separate it).

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
    n_unknowns = 1 + per_block + len(bits)
    fitted = False
    fixed = fixed_block_ms_per_s
    if per_block and _rank(points, bits, True) < n_unknowns - 1:  # depth never varies at fixed MACs: no block term
        raise BadInputError(f"latency fit: {len(points)} timed calls cannot separate a per-block cost; expected "
                            f"systems of different depths and widths")
    if _rank(points, bits, per_block) == n_unknowns:
        overhead, block, inverse = _solve(points, bits, None, per_block, fixed)
        fitted = overhead >= 0 and all(v > 0 for v in inverse) and block >= 0
    if not fitted:
        overhead, block, inverse = _solve(points, bits, prior_overhead_ms, per_block, fixed)
        if any(v <= 0 for v in inverse) and prior_overhead_ms > 0:
            # Calls faster than the prior overhead: that prior is wrong for this device, so assume none.
            overhead, block, inverse = _solve(points, bits, 0.0, per_block, fixed)
    if block < 0:  # a negative cost per block is noise (deep systems are not cheaper per block): leave it out
        return fit_latency_model(points, prior_overhead_ms=prior_overhead_ms)
    if any(v <= 0 for v in inverse):
        worst = bits[min(range(len(bits)), key=lambda i: inverse[i])]
        raise BadInputError(f"latency fit: {worst}-bit measurements are faster than the overhead alone allows; "
                            f"expected latencies above overhead_ms {overhead:g}")
    return LatencyFit(overhead, {b: 1.0 / (x * 1e6) for b, x in zip(bits, inverse)}, fitted, points, block,
                      per_block)


def leave_one_out_errors(points: Sequence[LatencyPoint], *, per_block: bool = False,
                         prior_overhead_ms: float = 0.0) -> list[float]:
    """(predicted - measured) / measured of each point predicted by a fit to all the others: the error to
    expect for a system that was never timed. Every precision needs two points at least."""
    out = []
    for i, point in enumerate(points):
        others = list(points[:i]) + list(points[i + 1:])
        fit = fit_latency_model(others, prior_overhead_ms=prior_overhead_ms, per_block=per_block)
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
                         device=device, fit=quality)
    if fit.block_fitted:
        notes.append(f"block_ms_per_s: fitted ({fit.block_ms_per_s:.3g} ms per block per second of audio)")
    elif fit.block_ms_per_s:
        notes.append(f"block_ms_per_s: kept at {fit.block_ms_per_s:g} (too few systems to refit it)")
    if not fit.overhead_fitted:
        notes.append(f"overhead_ms: kept at {fit.overhead_ms:g} (the measurements cannot separate it)")
    return model, notes
