"""Memory of the beam-search decoder (issue 15): what a bundle's LM and the decoder's hypotheses add to a
process, in both runtimes. `allinone.memory.decoder_peak_bytes` (what selection charges against a profile's
peak-memory budget) takes its two constants from this script's figures.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoder_memory.py --bundle BUNDLE_WITH_LM \
        --manifest ~/.cache/allinone/corpus/v1/test.jsonl [--runner PATH] [--beams 8,16,32]

The input is one program call's worth of real speech: test utterances concatenated up to the program's
maximum (30 s), so the decoder sees as many frames as one call can give it.

- Python (`allinone_runtime`), each figure in a fresh child process: the peak while the LM loads (parsing
  is transient memory too), resident memory before and after loading the LM and building the decoder
  (lexicon trie) and the peak while the trie is built, then the peak during one decode above the resident
  memory before it (Linux: /proc/self/clear_refs resets the peak). The process peak is the largest of the
  load peak, the loaded LM plus the trie's build peak, and the total.
- C++ (`allinone_runner --transcribe-only`): peak resident memory of the whole run with `--greedy` (no LM is
  read) and with `--beam B`; the difference is the LM and the decoder together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 2 ** 20

_CHILD = r"""
import gc, json, sys
from pathlib import Path
import numpy as np
from allinone_runtime.device import current_rss_bytes, peak_rss_bytes
from allinone_runtime.transcribe import Transcriber
from allinone_runtime.audio import read_audio

bundle, wav, beam = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = Transcriber(bundle, threads=1, greedy=True)
log_probs, _ = t.log_probs(read_audio(wav, t.bundle.sample_rate).samples)
from allinone_runtime.beam import BeamDecoder, DecoderOptions
from allinone_runtime.decoder import decoder_defaults
from allinone_runtime.ngram import load_lm
gc.collect(); before = current_rss_bytes()
Path("/proc/self/clear_refs").write_text("5")
lm = load_lm(Path(bundle) / "lm"); load_peak = peak_rss_bytes() - before; gc.collect(); after_lm = current_rss_bytes()
options = decoder_defaults(t.bundle.manifest)
Path("/proc/self/clear_refs").write_text("5")
decoder = BeamDecoder(t.bundle.vocab, lm, DecoderOptions(beam=beam, lm_weight=options.lm_weight,
                      word_bonus=options.word_bonus, oov_penalty=options.oov_penalty))
build_peak = peak_rss_bytes() - after_lm; gc.collect(); after_decoder = current_rss_bytes()
Path("/proc/self/clear_refs").write_text("5")
decoder.decode(log_probs)
print(json.dumps({"frames": len(log_probs), "load_peak": load_peak, "lm": after_lm - before, "trie": after_decoder - after_lm,
                  "trie_build_peak": build_peak,
                  "decode": peak_rss_bytes() - after_decoder}))
"""


def speech_clip(manifest: str, seconds: float, sample_rate: int, out: Path) -> float:
    """Test utterances concatenated up to `seconds`, written as a float WAV; returns its length in seconds."""
    import numpy as np
    import soundfile as sf

    from allinone_runtime.audio import read_audio

    root = Path(manifest).parent
    parts, n = [], 0
    for line in Path(manifest).read_text().splitlines():
        row = json.loads(line)
        samples = read_audio(root / row["audio_filepath"], sample_rate).samples
        if n + len(samples) > seconds * sample_rate:
            break
        parts.append(samples)
        n += len(samples)
    sf.write(str(out), np.concatenate(parts), sample_rate, subtype="FLOAT")
    return n / sample_rate


def python_figures(bundle: str, wav: Path, beam: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, bundle, str(wav), str(beam)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpp_peak_bytes(runner: str, bundle: str, wav: Path, args: list[str]) -> int:
    done = subprocess.run(["/usr/bin/time", "-f", "%M", runner, bundle, str(wav), "--transcribe-only",
                           "--threads", "1", *args], capture_output=True, text=True, check=True)
    return int(done.stderr.strip().splitlines()[-1]) * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="a bundle built with --lm")
    p.add_argument("--manifest", required=True, help="JSONL test manifest whose utterances make the clip")
    p.add_argument("--runner", help="allinone_runner binary (default: build it with allinone_runtime.cpp)")
    p.add_argument("--beams", default="8,16,32")
    args = p.parse_args()

    from allinone_runtime.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    lm_files = bundle.manifest["decoder"]["lm"]
    beams = [int(b) for b in args.beams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        seconds = speech_clip(args.manifest, bundle.max_samples / bundle.sample_rate, bundle.sample_rate, wav)
        print(f"bundle {args.bundle}: {bundle.subnet}, LM files {lm_files['bytes']:,} bytes "
              f"(order {lm_files['order']}, {lm_files['words']:,} words); clip {seconds:.1f} s of test speech")
        print("\n| runtime | beam | LM load peak MiB | LM loaded MiB | trie build peak MiB | lexicon trie MiB "
              "| decode peak MiB | total MiB | process peak MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for beam in beams:
            f = python_figures(args.bundle, wav, beam)
            total = f["lm"] + f["trie"] + f["decode"]
            peak = max(f["load_peak"], f["lm"] + f["trie_build_peak"], total)
            print(f"| Python | {beam} | {f['load_peak'] / MIB:.2f} | {f['lm'] / MIB:.2f} | {f['trie_build_peak'] / MIB:.2f} | "
                  f"{f['trie'] / MIB:.2f} | {f['decode'] / MIB:.2f} | {total / MIB:.2f} | {peak / MIB:.2f} |")
        runner = args.runner
        if runner is None:
            from allinone_runtime.cpp import build_runner

            runner = str(build_runner())
        greedy = cpp_peak_bytes(runner, args.bundle, wav, ["--greedy"])
        for beam in beams:
            extra = cpp_peak_bytes(runner, args.bundle, wav, ["--beam", str(beam)]) - greedy
            print(f"| C++ | {beam} | - | - | - | - | - | {extra / MIB:.2f} | {extra / MIB:.2f} |")
        print(f"\nC++ peak with --greedy: {greedy / MIB:.1f} MiB; Python frames decoded: {f['frames']}")


if __name__ == "__main__":
    main()
