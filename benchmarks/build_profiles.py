"""Per device profile, the whole build from the shipped checkpoint: select -> extract -> quantize -> export ->
lower -> verify -> bundle. Prints build time, .pte bytes vs the ideal, the share of operators XNNPACK runs, and
compression vs the float full system (markdown table).

Each profile is built on its own (no lowering shared with another profile), so its time is what a release
script pays for that profile alone. Targets (issue 6): .pte within 10 % of ideal, every profile under 5 min.

    .venv/bin/python benchmarks/build_profiles.py --checkpoint checkpoints/conformer_small --out runs/build_profiles

With --cold-warm, the release build instead: every profile in one `build` (distinct systems lowered once, in
--jobs processes) into an empty lowering cache (cold), then again with nothing changed (warm). Prints the wall
time of each, the per-system lowering seconds and cache hits, whether the warm .pte files are byte-identical
to the cold ones, and the cold/warm ratio (issue 16 targets: cold <= 8 min, warm <= 30 s).

    .venv/bin/python benchmarks/build_profiles.py --cold-warm --checkpoint checkpoints/conformer_small
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from allinone.build import build_bundles
from allinone.lowering_cache import LoweringCache
from allinone.notices import quiet_library_notices
from allinone.package import read_bundle_manifest
from allinone.profiles import list_profiles
from allinone.select import checkpoint_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/conformer_small")
    parser.add_argument("--out", default="runs/build_profiles", help="bundles go here (replaced)")
    parser.add_argument("--profiles", help="comma-separated (default: every shipped profile)")
    parser.add_argument("--cold-warm", action="store_true", help="one build of every profile into an empty "
                        "lowering cache, then the same build again (see above)")
    parser.add_argument("--jobs", type=int, default=None, help="lowering processes for --cold-warm (default: "
                        "as many as cores and memory allow)")
    args = parser.parse_args()
    quiet_library_notices()  # torchao's and torch's import-time notices, as the CLI
    profiles = args.profiles.split(",") if args.profiles else list_profiles()
    if args.cold_warm:
        cold_warm(args.checkpoint, profiles, Path(args.out), args.jobs)
        return
    catalog = checkpoint_catalog(args.checkpoint)
    full = max((e for e in catalog.entries if e.weight_bits == 32), key=lambda e: e.params)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for name in profiles:
        start = time.monotonic()
        built, failures = build_bundles(args.checkpoint, [name], out, progress=False)
        seconds = time.monotonic() - start
        if failures:
            rows.append(f"| {name} | - | {seconds:.0f} | failed: {failures[0].reason} | | | | |")
            continue
        manifest = read_bundle_manifest(built[0].path)
        lowering, sizes = manifest.get("lowering", {}), manifest["sizes"]
        delegated, outside = lowering.get("delegated_ops", 0), sum(lowering.get("portable_ops", {}).values())
        share = delegated / max(1, delegated + outside)
        rows.append(f"| {name} | {built[0].subnet} | {seconds:.0f} | {sizes['pte_bytes']:,} | {sizes['weight_bytes']:,} | "
                    f"{sizes['pte_bytes'] / sizes['weight_bytes'] - 1:+.1%} | {share:.0%} | "
                    f"{full.weight_bytes / sizes['weight_bytes']:.1f}x |")
        print(rows[-1], flush=True)
    print()
    print(f"Float full system {full.subnet}: {full.weight_bytes:,} B of weights.")
    print("| profile | system | build s | .pte bytes | ideal bytes | .pte vs ideal | ops delegated | compression |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def cold_warm(checkpoint: str, profiles: list[str], out: Path, jobs: int | None) -> None:
    """Build every profile twice into one fresh lowering cache: cold, then warm; print both and the ratio."""
    shutil.rmtree(out, ignore_errors=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="allinone-bench-cache-") as tmp:
        cache = LoweringCache(Path(tmp) / "programs")
        for run in ("cold", "warm"):
            start = time.monotonic()
            built, failures = build_bundles(checkpoint, profiles, out / run, progress=False, cache=cache, jobs=jobs)
            runs[run] = (time.monotonic() - start, built, failures)
            print(f"{run}: {runs[run][0]:.1f} s wall, {len(built)} bundles, {len(failures)} failures", flush=True)
    print()
    print("| build | wall s | bundles | systems | lowered | cache hits | seconds per system |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for run, (seconds, built, _) in runs.items():
        systems = {b.subnet: b.lowering for b in built}
        per_system = ", ".join(f"{s} {info['seconds']:.1f} s ({info['cache']})" for s, info in systems.items())
        print(f"| {run} | {seconds:.1f} | {len(built)} | {len(systems)} | "
              f"{sum(i['cache'] != 'hit' for i in systems.values())} | "
              f"{sum(i['cache'] == 'hit' for i in systems.values())} | {per_system} |")
    warm = runs["warm"][1]
    same = [(out / "cold" / b.profile / "model.pte").read_bytes() == (out / "warm" / b.profile / "model.pte").read_bytes()
            for b in warm]
    print()
    print(f"warm .pte files byte-identical to cold: {sum(same)}/{len(same)}; "
          f"cold/warm wall: {runs['cold'][0] / runs['warm'][0]:.1f}x")


if __name__ == "__main__":
    main()
