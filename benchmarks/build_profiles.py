"""Per device profile, the whole build from the shipped checkpoint: select -> extract -> quantize -> export ->
lower -> verify -> bundle. Prints build time, .pte bytes vs the ideal, the share of operators XNNPACK runs, and
compression vs the float full system (markdown table).

Each profile is built on its own (no lowering shared with another profile), so its time is what a release
script pays for that profile alone. Targets (issue 6): .pte within 10 % of ideal, every profile under 5 min.

    .venv/bin/python benchmarks/build_profiles.py --checkpoint checkpoints/conformer_small --out runs/build_profiles
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from allinone.build import build_bundles
from allinone.catalog import load_catalog
from allinone.package import read_bundle_manifest
from allinone.profiles import list_profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/conformer_small")
    parser.add_argument("--out", default="runs/build_profiles", help="bundles go here (replaced)")
    parser.add_argument("--profiles", help="comma-separated (default: every shipped profile)")
    args = parser.parse_args()
    logging.getLogger("torchao").setLevel(logging.ERROR)
    profiles = args.profiles.split(",") if args.profiles else list_profiles()
    catalog = load_catalog(Path(args.checkpoint) / "catalog.json")
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


if __name__ == "__main__":
    main()
