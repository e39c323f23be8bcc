"""What decoding adds to the network's time (issue 15): `bench` of a bundle, Python runtime and native runner, on
real speech, network and decoding timed apart (report.json format 3, `decoding`).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoding_cost.py --bundle BUNDLE \
        --manifest ~/.cache/allinone/corpus/v1/test.jsonl --out runs/decoding_cost [--threads 1] [--runs 20]

The audio is the manifest's utterances concatenated up to the program's maximum (30 s, written to
OUT/speech.wav), which each length (1, 5, 10, 20 s) repeats and cuts as `allinone bench --audio` does. Writes
OUT/{python,cpp}/report.{json,md} (the same files `allinone bench BUNDLE --audio OUT/speech.wav [--runner cpp]`
writes) and prints, per runner and length, network and decoding p50/p90 and decoding / network (p50).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_memory import speech_clip  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--manifest", required=True, help="JSONL manifest whose utterances make the speech clip")
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", default="1,5,10,20")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runners", default="python,cpp")
    args = p.parse_args()

    from allinone_runtime.bundle import Bundle
    from allinone_runtime.report import write_report
    from allinone_runtime.timing import bench, parse_lengths

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.open(args.bundle)
    wav = out / "speech.wav"
    seconds = speech_clip(args.manifest, bundle.max_samples / bundle.sample_rate, bundle.sample_rate, wav)
    lengths = parse_lengths(args.lengths)
    reports = {}
    for runner in args.runners.split(","):
        if runner == "python":
            report = bench(bundle, lengths_s=lengths, runs=args.runs, threads=args.threads, audio=wav)
            write_report(report, out / "python")
        else:
            from allinone_runtime.cpp import build_runner, run_runner

            _, report = run_runner(build_runner(), args.bundle, wav, lengths_s=lengths, runs=args.runs,
                                   threads=args.threads, out_dir=out / "cpp")
            write_report(report, out / "cpp")
        reports[runner] = report
    first = next(iter(reports.values()))["decoding"]
    print(f"bundle {args.bundle} ({bundle.subnet}); decoder {first['decoder']}, beam {first['beam']}, LM "
          f"{first['lm_bytes']} bytes; {seconds:.1f} s of speech; {args.threads} thread(s), {args.runs} runs per length\n")
    print("| runner | audio s | network p50 ms | network p90 ms | decoding p50 ms | decoding p90 ms | decoding / network (p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for runner, report in reports.items():
        for net, dec in zip(report["latency"], report["decoding"]["latency"]):
            print(f"| {runner} | {net['audio_s']:g} | {net['p50_ms']:.1f} | {net['p90_ms']:.1f} | {dec['p50_ms']:.1f} | "
                  f"{dec['p90_ms']:.1f} | {dec['p50_ms'] / net['p50_ms']:.1%} |")


if __name__ == "__main__":
    main()
