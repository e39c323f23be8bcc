"""Write latency reports (report.json, report.md, latency.png) and merge many bundles' reports into one table.

`merge_reports(DIST)` reads every report.json under DIST (for example DIST/<profile>/bench/report.json and a
C++ runner's report beside it), validates each, and writes DIST/comparison.md, DIST/comparison.json and
DIST/comparison.png: one row per report, latency against audio length for all of them in one plot.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import read_report as load_report  # the format's one reader lives in schema
from allinone_runtime.schema import validate_report

__all__ = ["write_report", "load_report", "report_markdown", "decoding_markdown", "merge_reports",
           "comparison_markdown"]

MIB = 2 ** 20

log = logging.getLogger(__name__)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def report_markdown(report: dict) -> str:
    b, d = report["bundle"], report["device"]
    lines = [
        f"# Latency of {b['subnet']} ({report['runner']} runner)",
        "",
        f"Measured {report['date']} on {d['hostname']} ({d['cpu']}, {d['cores']} cores, {d['system']}, "
        f"{d['machine']}), {report['threads']} threads, {report['runs']} timed runs per length after one warm-up.",
        "",
        f"- bundle: `{b['path']}`, {b['weight_bits']}-bit, .pte {b['pte_bytes'] / MIB:.2f} MiB"
        + (f", built for profile `{b['profile']}`" if b.get("profile") else ""),
        f"- load (program + method init): {report['load_ms']:.1f} ms; "
        f"first (cold) run: {report['first_run_ms']:.1f} ms",
        f"- peak resident memory: {report['peak_rss_bytes'] / MIB:.1f} MiB"
        + (f" ({report['rss_before_load_bytes'] / MIB:.1f} MiB before loading the program)"
           if "rss_before_load_bytes" in report else ""),
    ]
    if "audio" in report:
        lines.append(f"- audio: {report['audio']}")
    if report.get("transcript") is not None:
        lines.append(f"- transcript: \"{report['transcript']}\"")
    lines += ["", "| audio s | p50 ms | p90 ms | min ms | max ms | mean ms | RTF |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["latency"]:
        lines.append(f"| {r['audio_s']:g} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['min_ms']:.2f} | "
                     f"{r['max_ms']:.2f} | {r['mean_ms']:.2f} | {r['rtf']:.4f} |")
    if report.get("decoding"):  # format_version 3 on: decoding timed apart from the network
        lines += ["", *decoding_markdown(report)]
    if report.get("operators"):
        total = sum(op["total_ms"] for op in report["operators"])
        where = report.get("etdump", {})
        lines += ["", f"## Top operators (ETDump, per run on {where.get('audio_s', '?'):g} s of audio)", "",
                  "| operator | delegated | calls | ms | share |", "|---|---|---:|---:|---:|"]
        for op in report["operators"][:15]:
            lines.append(f"| {op['name']} | {'XNNPACK' if op['delegated'] else 'no'} | {op['calls']} | "
                         f"{op['total_ms']:.3f} | {op['total_ms'] / total:.1%} |")
    return "\n".join(lines) + "\n"


def decoding_markdown(report: dict) -> list[str]:
    """The decoding section of report.md: network and decoding p50/p90 per length, and what decoding adds."""
    dec = report["decoding"]
    if dec["decoder"] == "greedy":
        what = "greedy CTC decoding"
    else:
        lm = f", LM {dec['lm_bytes']:,} bytes" if dec.get("lm_bytes") is not None else ""
        what = f"CTC prefix beam search, beam {dec['beam']}{lm}"
    lines = [f"## Network and decoding ({what})", "",
             "The table above times the network (the program's forward); each of those calls' log-probs was then "
             "decoded and timed apart.", "",
             "| audio s | network p50 ms | network p90 ms | decoding p50 ms | decoding p90 ms | decoding / network (p50) |",
             "|---:|---:|---:|---:|---:|---:|"]
    network = {r["audio_s"]: r for r in report["latency"]}
    for r in dec["latency"]:
        n = network.get(r["audio_s"])
        share = f"{r['p50_ms'] / n['p50_ms']:.1%}" if n and n["p50_ms"] > 0 else "-"
        lines.append(f"| {r['audio_s']:g} | {n['p50_ms'] if n else float('nan'):.2f} | "
                     f"{n['p90_ms'] if n else float('nan'):.2f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {share} |")
    return lines


def _plot(series: list[tuple[str, dict]], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # allinone-runtime without its `plots` extra (a device): the tables carry the figures
        log.info("%s not drawn: matplotlib is not installed (pip install 'allinone-runtime[plots]')", path.name)
        return

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, report in series:
        x = [r["audio_s"] for r in report["latency"]]
        line, = ax.plot(x, [r["p50_ms"] for r in report["latency"]], marker="o", label=label)
        ax.fill_between(x, [r["min_ms"] for r in report["latency"]], [r["p90_ms"] for r in report["latency"]],
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("audio length (s)")
    ax.set_ylabel("latency per call (ms): p50, band min-p90")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(report: dict, out_dir: str | Path) -> Path:
    """Validate `report` and write OUT/report.json, OUT/report.md and OUT/latency.png; returns the JSON path."""
    validate_report(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.json", (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    _write_atomic(out / "report.md", report_markdown(report).encode())
    b = report["bundle"]
    _plot([(f"{b['subnet']} ({report['runner']}, {report['threads']} thr)", report)], out / "latency.png",
          f"{b['subnet']} on {report['device']['hostname']}")
    return out / "report.json"


def _label(report: dict, path: Path, dist: Path) -> str:
    return str(path.parent.relative_to(dist)) if path.parent != dist else report["bundle"]["subnet"]


def comparison_markdown(rows: list[tuple[str, dict]]) -> str:
    lengths = sorted({r["audio_s"] for _, rep in rows for r in rep["latency"]})
    head = ["report", "subnet", "bits", "runner", "threads", ".pte MiB", "load ms", "peak RSS MiB",
            *(f"p50 ms @{x:g}s" for x in lengths), "RTF (longest)", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for label, rep in rows:
        by_len = {r["audio_s"]: r for r in rep["latency"]}
        longest = by_len[max(by_len)]
        b = rep["bundle"]
        cells = [label, b["subnet"], str(b["weight_bits"]), rep["runner"], str(rep["threads"]),
                 f"{b['pte_bytes'] / MIB:.2f}", f"{rep['load_ms']:.1f}", f"{rep['peak_rss_bytes'] / MIB:.0f}",
                 *(f"{by_len[x]['p50_ms']:.1f}" if x in by_len else "-" for x in lengths),
                 f"{longest['rtf']:.4f} @{longest['audio_s']:g}s", rep["device"]["hostname"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def merge_reports(dist: str | Path) -> tuple[list[tuple[str, dict]], Path]:
    """Merge every report.json under `dist` into comparison.md/.json/.png; returns the rows and the .md path."""
    dist = Path(dist)
    if not dist.is_dir():
        raise RuntimeInputError(f"{dist}: not a directory; expected a folder of bundles with bench reports")
    paths = sorted(p for p in dist.rglob("report.json")
                   if not any(part.startswith(".") for part in p.relative_to(dist).parts))  # skip temp dirs
    if not paths:
        raise RuntimeInputError(f"{dist}: no report.json found; run `allinone bench BUNDLE --out DIR` first")
    rows = [(_label(rep, p, dist), rep) for p in paths for rep in [load_report(p)]]
    rows.sort(key=lambda r: (r[1]["bundle"]["subnet"], r[1]["runner"], r[1]["threads"], r[0]))
    _write_atomic(dist / "comparison.json", (json.dumps(
        {"format_version": 1, "reports": [{"label": label, **rep} for label, rep in rows]}, indent=2,
        allow_nan=False) + "\n").encode())
    _write_atomic(dist / "comparison.md", comparison_markdown(rows).encode())
    _plot([(f"{label} ({rep['runner']}, {rep['threads']} thr)", rep) for label, rep in rows], dist / "comparison.png",
          f"latency of {len(rows)} reports under {dist.name}")
    return rows, dist / "comparison.md"
