"""The transcribe / bench / report commands, shared by `python -m allinone_runtime` and `allinone`.

Each takes plain values, prints its result and returns an exit code; errors a user can cause are raised as
RuntimeInputError for the calling CLI to print as one line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from allinone_runtime.errors import EXIT_BAD_INPUT, RuntimeInputError

__all__ = ["transcribe_command", "bench_command", "report_command"]


def _notes(t, sample_rate: int) -> list[str]:
    notes = []
    if t.resampled:
        notes.append(f"resampled from {t.source_sample_rate} Hz to {sample_rate} Hz")
    if t.source_channels > 1:
        notes.append(f"mixed {t.source_channels} channels down to mono")
    if t.silent:
        notes.append("silence (peak below -60 dBFS): nothing to transcribe")
    if t.chunks > 1:
        notes.append(f"{t.audio_s:.1f} s transcribed in {t.chunks} overlapping windows")
    return notes


def transcribe_command(bundle: str, files: list[str], *, as_json: bool = False, threads: int | None = None,
                       prog: str = "allinone_runtime", greedy: bool = False, decoder_overrides: dict | None = None,
                       hotwords_file: str | None = None) -> int:
    """Transcribe every file (a bad file is reported as `PROG: error: ...` and skipped); exit 2 if any failed.
    Hotword phrases the model's units cannot spell are reported on stderr, one line each, and the rest used."""
    from allinone_runtime.beam import read_hotwords
    from allinone_runtime.transcribe import Transcriber

    hotwords = read_hotwords(hotwords_file) if hotwords_file else ()
    transcriber = Transcriber(bundle, threads=threads, greedy=greedy, decoder_overrides=decoder_overrides,
                              hotwords=hotwords)
    for phrase, chars in transcriber.decoder.skipped_hotwords if transcriber.decoder else ():
        print(f"{prog}: warning: {hotwords_file}: hotword {phrase!r} skipped: the model's units cannot spell "
              f"{chars!r}", file=sys.stderr)
    results, failed = [], 0
    for path in files:
        try:
            t = transcriber.transcribe(path)
        except RuntimeInputError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            results.append({"source": str(path), "error": str(err)})
            failed += 1
            continue
        if as_json:
            results.append({**t.to_dict(), "notes": _notes(t, transcriber.bundle.sample_rate)})
        else:
            for note in _notes(t, transcriber.bundle.sample_rate):
                print(f"{path}: {note}", file=sys.stderr)
            print(t.text if len(files) == 1 else f"{path}: {t.text}")
    if as_json:
        b = transcriber.bundle
        print(json.dumps({"bundle": str(b.path), "subnet": b.subnet, "load_ms": round(transcriber.load_ms, 3),
                          "results": results}, indent=2, allow_nan=False))
    return EXIT_BAD_INPUT if failed else 0


def _noise_wav(directory: Path, sample_rate: int) -> Path:
    """The Python bench's seeded noise as a float WAV, so the C++ runner times the same samples."""
    import soundfile as sf

    from allinone_runtime.timing import noise_source

    path = directory / "noise.wav"
    sf.write(str(path), noise_source(sample_rate), sample_rate, subtype="FLOAT")
    return path


def bench_command(bundle: str, out: str, *, lengths: str = "1,5,10,20", runs: int = 10, threads: int | None = None,
                  etdump: bool = False, audio: str | None = None, runner: str = "python") -> int:
    """Benchmark one bundle with the Python runtime or the C++ runner; write OUT/report.{json,md} + latency.png."""
    from allinone_runtime.timing import ETDUMP_RUNS, NOISE_SEED, bench, parse_lengths
    from allinone_runtime.report import report_markdown, write_report

    lengths_s = parse_lengths(lengths)
    if runner == "python":
        report = bench(bundle, lengths_s=lengths_s, runs=runs, threads=threads, etdump=etdump, audio=audio)
    elif runner == "cpp":
        from allinone_runtime.bundle import Bundle
        from allinone_runtime.cpp import build_runner, run_runner

        sample_rate = Bundle.open(bundle).sample_rate  # the Python runner's one-line errors, before any build
        binary = build_runner()
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            source = audio or _noise_wav(Path(tmp), sample_rate)
            etdump_path = Path(tmp) / "run.etdp" if etdump else None
            _, report = run_runner(binary, bundle, source, lengths_s=lengths_s, runs=runs, threads=threads,
                                   out_dir=out, etdump=etdump_path)
            if etdump_path is not None:
                from allinone_runtime.operators import inspector_available, operator_breakdown

                if inspector_available():
                    report["operators"] = operator_breakdown(etdump_path)
                    report["etdump"] = {"audio_s": lengths_s[min(1, len(lengths_s) - 1)], "runs": ETDUMP_RUNS - 1}
        if audio is None:
            report["audio"] = f"noise (seed {NOISE_SEED})"
    else:
        raise RuntimeInputError(f"--runner: expected python or cpp, got {runner!r}")
    path = write_report(report, out)
    print(report_markdown(report).rstrip())
    print(f"\nwrote {path}, {path.with_name('report.md')}, {path.with_name('latency.png')}")
    return 0


def report_command(dist: str) -> int:
    """Merge every report.json under DIST into one table (printed) and DIST/comparison.{md,json,png}."""
    from allinone_runtime.report import comparison_markdown, merge_reports

    rows, md = merge_reports(dist)
    print(comparison_markdown(rows).rstrip())
    print(f"\nwrote {md}, {md.with_suffix('.json')}, {md.with_suffix('.png')}")
    return 0
