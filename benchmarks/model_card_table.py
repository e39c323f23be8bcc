"""Print a checkpoint's model-card table: every catalogued system's size, compute, dev and test WER.

    .venv/bin/python benchmarks/model_card_table.py --checkpoint checkpoints/conformer_medium

Reads `catalog.json` (dev WER, written by `allinone catalog`) and `eval/test/results.json` (test WER and CER,
written by `allinone eval --json` into the checkpoint) and prints the markdown table that MODEL_CARD.md's
"How it does" section holds, so a new pack's card is updated from the files, not copied by hand. The
compression column is against the float full system (the catalog's first, largest entry).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from allinone.select import checkpoint_catalog

MIB = 1024 * 1024


def table(checkpoint: Path) -> str:
    catalog = checkpoint_catalog(checkpoint)
    test_path = checkpoint / "eval" / "test" / "results.json"
    test = {r["subnet"]: r for r in json.loads(test_path.read_text())} if test_path.exists() else {}
    full = max(catalog.entries, key=lambda e: e.weight_bytes)
    rows = [
        "| system | weights | vs full float | MMAC/s | dev WER | test WER (CER) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for e in catalog.entries:
        t = test.get(e.subnet)
        test_cell = f"{100 * t['wer']:.1f} % ({100 * t['cer']:.1f} %)" if t else "not measured"
        dev_cell = f"{100 * e.wer:.1f} %" if e.wer is not None else "not measured"
        rows.append(
            f"| {e.subnet} | {e.weight_bytes / MIB:.1f} MiB | {full.weight_bytes / e.weight_bytes:.1f}x "
            f"| {e.macs_per_second / 1e6:.0f} | {dev_cell} | {test_cell} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a packed checkpoint with catalog.json")
    print(table(parser.parse_args().checkpoint))


if __name__ == "__main__":
    main()
