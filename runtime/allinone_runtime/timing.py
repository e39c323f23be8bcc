"""Measure a bundle on this machine with the Python runtime and return a latency report (docs/formats.md).

Inputs of each length are made by repeating the source audio (a speech clip, or seeded noise when none is
given) and cutting it to length, so every runner (Python, C++) times the same samples. The first call on
the first length is the cold run; every length then gets one warm-up call and `runs` timed calls. Each timed
call is the network (the program's `forward`, the report's `latency`) and then, timed apart, the decoding of
its log-probs by the bundle's default decoder (`decoding`): greedy, or beam search with the bundle's LM.
"""

from __future__ import annotations

import datetime
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from allinone_runtime.audio import read_audio
from allinone_runtime.bundle import Bundle, fit_length, installed_executorch_version
from allinone_runtime.ctc import decode_greedy, greedy_ids
from allinone_runtime.device import current_rss_bytes, device_info, peak_rss_bytes
from allinone_runtime.engine import Engine, thread_count
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import REPORT_FORMAT_VERSION, REPORT_KIND, validate_report
from allinone_runtime.transcribe import Transcriber

__all__ = ["DEFAULT_LENGTHS_S", "ETDUMP_RUNS", "bench", "bench_inputs", "latency_row", "noise_source", "parse_lengths"]

log = logging.getLogger(__name__)

DEFAULT_LENGTHS_S = (1.0, 5.0, 10.0, 20.0)
ETDUMP_RUNS = 3  # profiled calls (the first is dropped as warm-up) on the reference length
NOISE_SEED = 0


def parse_lengths(text: str) -> tuple[float, ...]:
    """'1,5,10,20' -> (1.0, 5.0, 10.0, 20.0); a one-line error for anything else."""
    try:
        lengths = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise RuntimeInputError(f"--lengths: expected comma-separated seconds like 1,5,10,20, got {text!r}") from None
    if not lengths:
        raise RuntimeInputError("--lengths: expected at least one length in seconds")
    return lengths


def noise_source(sample_rate: int) -> np.ndarray:
    """One second of seeded noise: the bench's audio when none is given (dense models cost the same whatever
    the samples say)."""
    return (0.1 * np.random.default_rng(NOISE_SEED).standard_normal(sample_rate)).astype(np.float32)


def bench_inputs(source: np.ndarray, lengths_s, sample_rate: int, min_samples: int,
                 max_samples: int, length_step: int = 1) -> list[np.ndarray]:
    """One input per length: `source` repeated to round(length * rate) samples, then cut to the length one
    program call takes for that much audio (`bundle.fit_length`: under one output frame less)."""
    inputs = []
    for length in lengths_s:
        n = round(length * sample_rate)
        if not min_samples <= n < max_samples + length_step:
            raise RuntimeInputError(f"--lengths: {length:g} s is outside the program's range "
                                    f"{min_samples / sample_rate:g}-{max_samples / sample_rate:g} s (one call)")
        n = fit_length(n, min_samples, max_samples, length_step)
        inputs.append(np.resize(source, n).astype(np.float32))  # np.resize repeats the source
    return inputs


def latency_row(audio_s: float, times_ms) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    p50 = float(np.percentile(t, 50))
    return {"audio_s": audio_s, "p50_ms": round(p50, 4), "p90_ms": round(float(np.percentile(t, 90)), 4),
            "min_ms": round(float(t.min()), 4), "max_ms": round(float(t.max()), 4),
            "mean_ms": round(float(t.mean()), 4), "rtf": round(p50 / (audio_s * 1e3), 6)}


def _timed(engine: Engine, samples: np.ndarray) -> float:
    start = time.perf_counter()
    engine.run(samples)
    return (time.perf_counter() - start) * 1e3


def _timed_call(engine: Engine, samples: np.ndarray, decode) -> tuple[float, float]:
    """(network ms, decoding ms) of one call: the program's forward, then `decode` on its log-probs."""
    start = time.perf_counter()
    log_probs = engine.run(samples)
    network = time.perf_counter()
    decode(log_probs)
    return (network - start) * 1e3, (time.perf_counter() - network) * 1e3


def _decoding(transcriber: Transcriber):
    """The bundle's default decoder as a function of log-probs, and how the report describes it."""
    b, decoder = transcriber.bundle, transcriber.decoder
    if decoder is None:
        return (lambda lp: decode_greedy(greedy_ids(lp), b.vocab, b.frame_shift_s)), \
            {"decoder": "greedy", "beam": None, "lm_bytes": None}
    block = b.manifest["decoder"]
    return decoder.decode_words, {"decoder": block["type"], "beam": decoder.options.beam,
                                  "lm_bytes": sum(f["bytes"] for f in block["lm"]["files"])}  # checked at load


def _operators(bundle: Bundle, samples: np.ndarray) -> list[dict] | None:
    from allinone_runtime.operators import inspector_available, operator_breakdown

    if not inspector_available():
        return None
    engine = Engine(bundle.pte_path, etdump=True)  # a separate instance: profiling must not slow the timed runs
    for _ in range(ETDUMP_RUNS):
        engine.run(samples)
    with tempfile.TemporaryDirectory() as tmp:
        engine.write_etdump(Path(tmp) / "run.etdp", Path(tmp) / "debug.bin")
        return operator_breakdown(Path(tmp) / "run.etdp")


def bench(bundle: Bundle | str | Path, *, lengths_s=DEFAULT_LENGTHS_S, runs: int = 10, threads: int | None = None,
          etdump: bool = False, audio: str | Path | None = None) -> dict:
    """Time `bundle` on this machine; returns a validated report dict (see docs/formats.md, Latency report)."""
    if runs < 1:
        raise RuntimeInputError(f"--runs: expected >= 1, got {runs}")
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    rss_before = current_rss_bytes()
    if audio is not None:
        source = read_audio(audio, bundle.sample_rate).samples
        audio_name = str(audio)
    else:
        source = noise_source(bundle.sample_rate)
        audio_name = f"noise (seed {NOISE_SEED})"
    inputs = bench_inputs(source, lengths_s, bundle.sample_rate, bundle.min_samples, bundle.max_samples,
                          bundle.length_step)
    transcriber = Transcriber(bundle, threads=threads)
    engine = transcriber.engine
    decode, decoding = _decoding(transcriber)

    first_run_ms = _timed(engine, inputs[0])
    rows, decode_rows = [], []
    for k, (length, samples) in enumerate(zip(lengths_s, inputs)):
        if k > 0:
            engine.run(samples)  # warm-up at this length (the cold run was the first length's)
        calls = [_timed_call(engine, samples, decode) for _ in range(runs)]
        rows.append(latency_row(float(length), [network for network, _ in calls]))
        decode_rows.append(latency_row(float(length), [decoding_ms for _, decoding_ms in calls]))
        log.info("%s: %g s audio: network p50 %.1f ms, %s decoding p50 %.1f ms", bundle.subnet, length,
                 rows[-1]["p50_ms"], decoding["decoder"], decode_rows[-1]["p50_ms"])
    report = {
        "format_version": REPORT_FORMAT_VERSION,
        "kind": REPORT_KIND,
        "measured": True,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(),
        "runner": "python",
        "bundle": {"path": str(bundle.path), "subnet": bundle.subnet, "weight_bits": bundle.weight_bits,
                   "macs_per_second": bundle.macs_per_second, "pte_bytes": bundle.pte_bytes,
                   "pte_sha256": bundle.pte_sha256, "profile": bundle.profile_name},
        "threads": threads if threads is not None else thread_count(),
        "runs": runs,
        "load_ms": round(transcriber.load_ms, 4),
        "first_run_ms": round(first_run_ms, 4),
        "latency": rows,
        "decoding": {**decoding, "latency": decode_rows},
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_load_bytes": rss_before,
        "executorch": installed_executorch_version(),
        "audio": audio_name,
    }
    if audio is not None:
        report["transcript"] = transcriber.transcribe(audio).text
    if etdump:
        reference = inputs[min(1, len(inputs) - 1)]  # 5 s with the default lengths
        operators = _operators(bundle, reference)
        if operators is not None:
            report["operators"] = operators
            report["etdump"] = {"audio_s": len(reference) / bundle.sample_rate, "runs": ETDUMP_RUNS - 1}
    return validate_report(report)
