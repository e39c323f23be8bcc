"""Lowering cost and .pte size of conformer_small nested systems.

For each system: seconds per stage (extract+quantize, torch.export, to_edge_transform_and_lower,
serialize), XNNPACK partitions, .pte bytes vs the ideal (every tensor at its stored precision, see
docs/formats.md), the share of operators XNNPACK runs, and compression vs the float full system.
Random-init weights: sizes and times do not depend on training.

    .venv/bin/python benchmarks/lowering.py --systems d12-f512-h4-w32,d12-f512-h4-w8,d12-f512-h4-w4,d4-f128-h2-w4

To compare two versions of the code on a busy machine, run this script under both at the same time
(PYTHONPATH=<other checkout>/sdk for the other one) and compare the totals as a ratio.
"""

from __future__ import annotations

import argparse

import torch

from allinone.export import export_subnet
from allinone.models.conformer import conformer_small
from allinone.notices import quiet_library_notices
from allinone.size import subnet_size
from allinone.spec import SubnetSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="d12-f512-h4-w32,d12-f512-h4-w8,d12-f512-h4-w4,d4-f128-h2-w4")
    args = parser.parse_args()
    quiet_library_notices()  # torchao's and torch's import-time notices, as the CLI
    torch.manual_seed(0)
    model = conformer_small(29).eval()
    full = subnet_size(model, model.search_space.largest())
    header = (f"{'system':<18}{'extract':>8}{'export':>8}{'lower':>8}{'serial.':>8}{'total s':>9}{'parts':>6}"
              f"{'.pte bytes':>12}{'ideal':>12}{'overhead':>9}{'delegated':>10}{'compr.':>8}")
    print(header)
    for spec_id in args.systems.split(","):
        spec = SubnetSpec.from_id(spec_id)
        program = export_subnet(model, spec)
        ideal = subnet_size(model, spec).weight_bytes
        s = program.seconds
        delegated, portable = sum(program.delegated_ops.values()), sum(program.portable_ops.values())
        print(f"{spec.id:<18}{s['extract_quantize']:>8.1f}{s['export']:>8.1f}{s['lower']:>8.1f}{s['serialize']:>8.1f}"
              f"{sum(s.values()):>9.1f}{getattr(program, 'partitions', -1):>6}{len(program.pte):>12,}{ideal:>12,}{len(program.pte) / ideal - 1:>8.1%}"
              f"{delegated / (delegated + portable):>10.0%}{full.weight_bytes / ideal:>7.1f}x", flush=True)


if __name__ == "__main__":
    main()
