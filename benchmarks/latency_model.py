"""Latency model on this host: predicted vs measured latency of lowered conformer_small systems.

Lowers each system (random-initialised weights: timing does not depend on their values; cached in --work),
times them in the ExecuTorch runtime at the profile's reference length and thread count, interleaved in one
fresh process (one call of each in turn, so other load on a shared machine hits all systems alike), fits the
profile's latency model (overhead + MACs / throughput per precision) and prints, per system:

- the measured median of the interleaved calls (and the fastest call),
- the prediction of the fit to all systems and its error,
- the leave-one-out prediction (fit to the other systems) and its error: what to expect for a system that
  was not measured; the same with a cost per encoder block added to the model, and with a size term per
  precision too (`allinone.profiles.size_feature`),
- the prediction of the profile given (shipped, or measured here by `allinone profiles measure`, with its
  per-block term),
- measured peak RSS vs the predicted .pte + planned activations + runtime overhead (the overhead measured
  here on a tiny program).

The header and `--json` record this machine's CPU features (device.isa), which decide how precisions rank.
The issue-21 check: with a measured profile, the leave-one-out errors of the profile's model form (overhead,
throughput per precision, and the per-block and size terms when the profile has them) over >= 12 systems must
stay within 12 %:

    .venv/bin/allinone profiles measure --checkpoint checkpoints/conformer_small --out runs/this-host.yaml
    .venv/bin/python benchmarks/latency_model.py --checkpoint checkpoints/conformer_small \
        --profile runs/this-host.yaml --json runs/latency_model.json

    .venv/bin/python benchmarks/latency_model.py [--work DIR] [--profile host-x86_64] [--write-profile FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys

DEFAULT_SYSTEMS = [  # five per precision, spanning depth, feed-forward width and heads (15 >= the 12 asked)
    "d12-f512-h4-w32", "d8-f384-h3-w32", "d4-f128-h2-w32", "d6-f256-h2-w32", "d10-f384-h4-w32",
    "d12-f512-h4-w8", "d6-f256-h4-w8", "d4-f128-h2-w8", "d8-f512-h2-w8", "d10-f256-h3-w8",
    "d12-f512-h4-w4", "d10-f128-h2-w4", "d4-f512-h3-w4", "d6-f384-h2-w4", "d8-f256-h4-w4",
]
LOO_TARGET = 0.12  # issue 21: a measured profile predicts >= 12 systems leave-one-out within 12 %
MIB = 2**20


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="host-x86_64", help="profile giving threads and reference length, and "
                   "whose predictions are compared (a shipped name, or a .yaml such as one `allinone profiles "
                   "measure` wrote)")
    p.add_argument("--checkpoint", metavar="DIR", help="time this checkpoint's architecture (default: an untrained "
                   "conformer_small; timing does not depend on weight values)")
    p.add_argument("--json", metavar="FILE", help="also write the results, with this machine's device record "
                   "(CPU features included), as JSON")
    p.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, metavar="ID", help="conformer_small systems")
    p.add_argument("--work", default="runs/latency_model", help="cache of lowered programs (default: %(default)s)")
    p.add_argument("--runs", type=int, default=30, help="timed calls per system after one warm-up call")
    p.add_argument("--write-profile", metavar="FILE", help="write the profile refitted from these measurements")
    return p.parse_args(argv)


def _fmt_table(rows: list[tuple[str, ...]], right_from: int = 1) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)


def _size_fit(points, prior_overhead_ms: float):
    """The fit with per-block and size terms, or None where the points cannot separate a size term."""
    from allinone.errors import BadInputError
    from allinone.latency_fit import fit_latency_model

    try:
        return fit_latency_model(points, prior_overhead_ms=prior_overhead_ms, per_block=True, size_term=True)
    except BadInputError:
        return None


def main(argv: list[str] | None = None) -> int:
    import torch

    from allinone.data.tokenizer import CharTokenizer
    from allinone.latency import (fit_latency_model, measure_host, measured_profile, planned_activation_bytes,
                                  runtime_overhead_bytes, save_profile, tiny_program)
    from allinone_runtime.device import device_info
    from allinone.models.conformer import conformer_small
    from allinone.notices import quiet_library_notices
    from allinone.profiles import load_profile
    from allinone.spec import SubnetSpec

    args = _parse_args(argv)
    quiet_library_notices()  # torchao's and torch's import-time notices, as the CLI
    profile = load_profile(args.profile)
    audio_s, threads = profile.latency.reference_audio_s, profile.threads

    def log(message: str) -> None:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)

    torch.manual_seed(0)
    if args.checkpoint:
        from allinone.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint).model
    else:
        model = conformer_small(len(CharTokenizer())).eval()
    device = device_info()
    if profile.isa is not None and tuple(device["isa"]) != profile.isa:
        log(f"profile {profile.name} assumes CPU features {', '.join(profile.isa) or 'none'}; this machine has "
            f"{', '.join(device['isa']) or 'none'}: its predictions are for another CPU")
    specs = [model.search_space.validate(SubnetSpec.from_id(s)) for s in args.systems]
    load_before = os.getloadavg()
    systems = measure_host(model, specs, threads=threads, audio_s=audio_s, runs=args.runs, work_dir=args.work, log=log)
    load_after = os.getloadavg()
    tiny = tiny_program(args.work)
    overhead, _ = runtime_overhead_bytes(tiny, threads=threads, audio_s=audio_s)
    log(f"runtime overhead {overhead / MIB:.1f} MiB (tiny program {len(tiny)} B, activations "
        f"{planned_activation_bytes(tiny)} B)")

    points = [s.point() for s in systems]
    fit = fit_latency_model(points, prior_overhead_ms=profile.latency_model.overhead_ms)
    # The same fit with a cost per encoder block: what the profile's model leaves out (see the docs).
    block_fit = fit_latency_model(points, prior_overhead_ms=profile.latency_model.overhead_ms, per_block=True)
    size_fit = _size_fit(points, profile.latency_model.overhead_ms)  # None: < 3 sizes/precision
    rows = [("system", "MMAC/s", "measured ms", "min ms", "fit ms", "err", "leave-1-out", "err", "+block l-1-o", "err",
             "+size l-1-o", "err", "profile ms", "err", "peak MiB", "predicted", "err")]
    loo_errors, block_errors, size_errors, shipped_errors, peak_errors = [], [], [], [], []
    for i, (s, point) in enumerate(zip(systems, points)):
        others = points[:i] + points[i + 1:]
        loo = fit_latency_model(others, prior_overhead_ms=fit.overhead_ms).predict(point)
        loo_block = fit_latency_model(others, prior_overhead_ms=fit.overhead_ms, per_block=True).predict(point)
        size_others = _size_fit(others, fit.overhead_ms) if size_fit else None
        loo_size = size_others.predict(point) if size_others else math.nan
        fitted = fit.predict(point)
        shipped = profile.predict_latency_ms(point.macs, s.weight_bits, blocks=point.blocks, audio_s=point.audio_s)
        peak_pred = s.pte_bytes + s.activation_bytes + overhead
        errs = [(v - s.ms) / s.ms for v in (fitted, loo, loo_block, loo_size, shipped)]
        for errors, e in zip((loo_errors, block_errors, size_errors, shipped_errors), errs[1:]):
            errors.append(abs(e))  # nan where the size term cannot be fitted
        peak_errors.append((peak_pred - s.peak_rss_bytes) / s.peak_rss_bytes)
        rows.append((s.subnet, f"{s.macs_per_second / 1e6:.1f}", f"{s.ms:.1f}", f"{s.timing.min_ms:.1f}",
                     f"{fitted:.1f}", f"{errs[0]:+.1%}",
                     f"{loo:.1f}", f"{errs[1]:+.1%}", f"{loo_block:.1f}", f"{errs[2]:+.1%}", f"{loo_size:.1f}",
                     f"{errs[3]:+.1%}", f"{shipped:.1f}", f"{errs[4]:+.1%}", f"{s.peak_rss_bytes / MIB:.1f}",
                     f"{peak_pred / MIB:.1f}", f"{peak_errors[-1]:+.1%}"))

    if any(math.isnan(e) for e in size_errors):  # some leave-one-out subset could not separate the size term
        size_fit = None
    print(f"host: {device['cpu']} ({device['cores']} cores, {device['system']}; CPU features "
          f"{', '.join(device['isa']) or 'none recorded'}); profile {profile.name}: "
          f"{threads} threads, {audio_s:g} s of audio; median of {args.runs} interleaved calls; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(_fmt_table(rows))
    print()
    gmacs = ", ".join(f"{b}-bit {g:.1f}" for b, g in sorted(fit.effective_gmacs.items(), reverse=True))
    print(f"fit (the profile's model): overhead_ms {fit.overhead_ms:.2f}{'' if fit.overhead_fitted else ' (kept)'}; "
          f"effective GMAC/s {gmacs}")
    print(f"  error |predicted - measured| / measured: fit max {fit.max_abs_error:.1%}; leave-one-out max "
          f"{max(loo_errors):.1%}, mean {sum(loo_errors) / len(loo_errors):.1%}")
    gmacs = ", ".join(f"{b}-bit {g:.1f}" for b, g in sorted(block_fit.effective_gmacs.items(), reverse=True))
    print(f"fit + per-block term: overhead_ms {block_fit.overhead_ms:.2f}, {block_fit.block_ms_per_s:.3f} ms per block "
          f"per audio second; effective GMAC/s {gmacs}")
    print(f"  error: fit max {block_fit.max_abs_error:.1%}; leave-one-out max {max(block_errors):.1%}, mean "
          f"{sum(block_errors) / len(block_errors):.1%}")
    if size_fit is not None:
        terms = ", ".join(f"{b}-bit {v:+.3f}" for b, v in sorted(size_fit.size_term_ms.items(), reverse=True))
        print(f"fit + per-block + size term: overhead_ms {size_fit.overhead_ms:.2f}, {size_fit.block_ms_per_s:.3f} ms "
              f"per block per audio second, size term {terms} ms per audio second per sqrt(GMAC/s)")
        print(f"  error: fit max {size_fit.max_abs_error:.1%}; leave-one-out max {max(size_errors):.1%}, mean "
              f"{sum(size_errors) / len(size_errors):.1%}")
    else:
        print("fit + size term: not fitted (needs three or more systems of different sizes per precision)")
    lm = profile.latency_model
    form = ", per-block term" if lm.block_ms_per_s else ""
    form += ", size term" if lm.size_term_ms is not None else ""
    print(f"profile {profile.name} as given ({lm.source}{form}): max error {max(shipped_errors):.1%}")
    # The figure: leave-one-out of the model form the measured profile uses (nan: not fittable).
    form_errors = size_errors if lm.size_term_ms is not None else block_errors if lm.block_ms_per_s else loo_errors
    worst = max(form_errors, key=lambda e: math.inf if math.isnan(e) else e)
    verdict = "within" if worst <= LOO_TARGET and len(systems) >= 12 else "NOT within"
    print(f"issue 21: leave-one-out with the measured profile's model (overhead, per-precision throughput{form}) "
          f"over {len(systems)} systems: max {worst:.1%}, {verdict} {LOO_TARGET:.0%} over >= 12 systems")
    print(f"peak memory (.pte + planned activations {systems[0].activation_bytes} B + runtime overhead "
          f"{overhead / MIB:.1f} MiB) vs measured VmHWM: max {max(peak_errors, key=abs):+.1%}")
    for b in sorted(fit.effective_gmacs, reverse=True):
        dense = getattr(profile.latency_model.throughput_gmacs, {32: "fp32", 8: "int8", 4: "int4"}[b])
        if dense is not None and profile.latency_model.workload_factor < 1:  # dense GEMM figures to compare with
            print(f"  {b}-bit: the encoder reaches {fit.effective_gmacs[b] / dense:.2f} of the profile's dense "
                  f"{dense:g} GMAC/s")

    if args.json:
        from allinone.files import atomic_write_text

        result = {
            "kind": "allinone-latency-model-benchmark", "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": device, "threads": threads, "audio_s": audio_s, "runs": args.runs,
            "checkpoint": args.checkpoint, "load_average": [load_before[0], load_after[0]],
            "profile": {"name": profile.name, "source": profile.latency_model.source, "isa": profile.isa,
                        "max_error": max(shipped_errors)},
            "fit": {"overhead_ms": fit.overhead_ms, "effective_gmacs": fit.effective_gmacs,
                    "max_error": fit.max_abs_error, "loo_max_error": max(loo_errors)},
            "fit_per_block": {"overhead_ms": block_fit.overhead_ms, "block_ms_per_s": block_fit.block_ms_per_s,
                              "effective_gmacs": block_fit.effective_gmacs, "max_error": block_fit.max_abs_error,
                              "loo_max_error": max(block_errors),
                              "loo_mean_error": sum(block_errors) / len(block_errors)},
            "fit_size_term": None if size_fit is None else {
                "overhead_ms": size_fit.overhead_ms, "block_ms_per_s": size_fit.block_ms_per_s,
                "size_term_ms": size_fit.size_term_ms, "effective_gmacs": size_fit.effective_gmacs,
                "max_error": size_fit.max_abs_error, "loo_max_error": max(size_errors),
                "loo_mean_error": sum(size_errors) / len(size_errors)},
            "loo_profile_form_max_error": None if math.isnan(worst) else worst,
            "loo_target": LOO_TARGET, "loo_within_target": verdict == "within",
            "systems": [{"subnet": s.subnet, "weight_bits": s.weight_bits, "macs_per_second": s.macs_per_second,
                         "p50_ms": s.ms, "min_ms": s.timing.min_ms, "peak_rss_bytes": s.peak_rss_bytes}
                        for s in systems],
        }
        atomic_write_text(args.json, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")

    if args.write_profile:
        today = datetime.date.today().isoformat()
        citation = (f"timed {len(systems)} lowered conformer_small systems on this host ({device['cpu']}), "
                    f"ExecuTorch XNNPACK, {threads} threads, {audio_s:g} s, median of {args.runs} interleaved calls: "
                    f"benchmarks/latency_model.py; leave-one-out error max {max(loo_errors):.0%}")
        # Uncertainty from leave-one-out: the error to expect on a system that was not timed.
        note = (f"Fitted on {len(systems)} conformer_small systems at {threads} threads; workload_factor is 1 "
                f"because the throughputs were measured on the speech encoder itself. Leave-one-out error max "
                f"{max(loo_errors):.0%}, mean {sum(loo_errors) / len(loo_errors):.0%}; with a per-block term "
                f"max {max(block_errors):.0%}. Load average {load_before[0]:.1f}-{load_after[0]:.1f} during timing: "
                f"on a shared machine absolute speed varies between runs.")
        new, notes = measured_profile(profile, fit, overhead_bytes=overhead, date=today, citations=[citation],
                                      uncertainty_pct=math.ceil(100 * max(loo_errors)), notes=note)
        save_profile(new, args.write_profile, header=f"Measured by benchmarks/latency_model.py on {today}.")
        print(f"wrote {args.write_profile}: " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
