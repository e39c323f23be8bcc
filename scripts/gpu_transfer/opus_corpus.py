"""Move a corpus's training audio through a 64 MiB transfer limit: 1-hour Ogg/Opus streams plus offsets.

pack   (here): concatenate the corpus's train WAVs (in id order, as synthesis finishes them) into parts of about
       an hour, each `part-NNN.opus` + `part-NNN.json` ([[id, start_sample, n_samples], ...]); resumable.
texts  (here): id -> text of the train stream, from the synthesis plan (the manifest is written only at the end).
manifest (here): the trainer's manifest of all parts, with the WAV paths they will have on the device.
unpack (device): cut the parts back into 16 kHz WAVs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def _write_part(wavs: list[Path], out: Path, index: int, level: float) -> float:
    """Write part `index` from `wavs`; returns its seconds of audio."""
    chunks, table, pos = [], [], 0
    for w in wavs:
        a, sr = sf.read(str(w), dtype="float32")
        assert sr == SR, w
        chunks.append(a)
        table.append([w.stem, pos, len(a)])
        pos += len(a)
    audio = np.concatenate(chunks)
    tmp = out / f".part-{index:03d}.opus"
    with sf.SoundFile(str(tmp), "w", SR, 1, format="OGG", subtype="OPUS", compression_level=level) as f:
        f.write(audio)
    (out / f"part-{index:03d}.json").write_text(json.dumps(table))
    os.replace(tmp, out / f"part-{index:03d}.opus")
    return pos / SR


def pack(corpus: Path, out: Path, parts: list[int], per_part: int, level: float, follow: bool) -> None:
    """Part i holds train ids [i * per_part, (i + 1) * per_part): parts are independent, so several packers
    can share the work; a part is packed once all its WAVs exist (or synthesis has finished)."""
    out.mkdir(parents=True, exist_ok=True)
    audio_dir = corpus / "audio" / "train"
    todo = [i for i in parts if not (out / f"part-{i:03d}.opus").exists()]
    while todo:
        finished = (corpus / "train.jsonl").exists()
        i = todo[0]
        wavs = [audio_dir / f"train-{k:06d}.wav" for k in range(i * per_part, (i + 1) * per_part)]
        present = [w for w in wavs if w.exists()]
        if len(present) == len(wavs) or (finished and present):
            t0 = time.perf_counter()
            secs = _write_part(present, out, i, level)
            print(f"part {i}: {len(present)} utterances, {secs / 3600:.2f} h, "
                  f"{(out / f'part-{i:03d}.opus').stat().st_size / 2**20:.1f} MiB, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            todo.pop(0)
        elif finished or not follow:
            return
        else:
            time.sleep(30)


def texts(out: Path, n: int) -> None:
    """id -> text of the first n train items of corpus v2 (seed 0, the settings of docs/benchmarks.md)."""
    from itertools import islice

    from allinone.data import synth
    from allinone.data._voices import find_voices

    sentences = synth._sentences(2)
    voices = synth._split_voices(find_voices(None), 0, 0.1)
    split_sentences = synth._split_sentences(sentences, 0, synth.SENTENCE_SHARE)
    stream = synth._stream("train", split_sentences["train"], voices["train"], 0)
    table = {i.id: i.sentence.text for i in islice(stream, n)}
    with gzip.open(out, "wt") as f:
        json.dump(table, f)


def manifest(part_dirs: list[Path], texts_file: Path, root: str, out: Path) -> None:
    """The training manifest of every part (in the order given), WAV paths under `root` on the device."""
    with gzip.open(texts_file, "rt") as f:
        text = json.load(f)
    lines = []
    for d in part_dirs:
        for table in sorted(d.glob("part-*.json")):
            for utt, _, n in json.loads(table.read_text()):
                lines.append(json.dumps({"audio_filepath": f"{root}/{utt}.wav", "text": text[utt],
                                         "duration": round(n / SR, 3)}))
    out.write_text("".join(line + "\n" for line in lines))
    print(f"{out}: {len(lines)} utterances, {sum(json.loads(x)['duration'] for x in lines) / 3600:.2f} h")


def unpack(parts: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    n_utts = 0
    for p in parts:
        audio, sr = sf.read(str(p), dtype="float32")
        assert sr == SR, p
        for utt, start, n in json.loads(p.with_suffix(".json").read_text()):
            tmp = out / f".{utt}.wav"
            sf.write(str(tmp), np.clip(audio[start:start + n], -1.0, 1.0), SR, subtype="PCM_16", format="WAV")
            os.replace(tmp, out / f"{utt}.wav")
            n_utts += 1
    print(f"unpacked {len(parts)} parts: {n_utts} utterances", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("corpus", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--parts", required=True, help="e.g. 0-20 or 0-20:2 (every second part)")
    p.add_argument("--per-part", type=int, default=1133, help="utterances per part (~1 h)")
    p.add_argument("--level", type=float, default=0.97)
    p.add_argument("--follow", action="store_true", help="wait for synthesis to make more audio")
    t = sub.add_parser("texts")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--n", type=int, default=40000)
    m = sub.add_parser("manifest")
    m.add_argument("dirs", type=Path, nargs="+")
    m.add_argument("--texts", type=Path, required=True)
    m.add_argument("--root", required=True)
    m.add_argument("--out", type=Path, required=True)
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path, nargs="+")
    u.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.cmd == "pack":
        span, _, stride = a.parts.partition(":")
        first, _, last = span.partition("-")
        pack(a.corpus, a.out, list(range(int(first), int(last or first) + 1, int(stride or 1))), a.per_part,
             a.level, a.follow)
    elif a.cmd == "texts":
        texts(a.out, a.n)
    elif a.cmd == "manifest":
        manifest(a.dirs, a.texts, a.root, a.out)
    else:
        unpack(a.parts, a.out)


if __name__ == "__main__":
    sys.exit(main())
