"""Tune the beam-search decoder's LM weight, word bonus and OOV penalty on a dev manifest.

    nice -n 5 .venv/bin/python benchmarks/tune_decoder.py --checkpoint checkpoints/conformer_small \
        --manifest ~/.cache/allinone/corpus/v1/dev.jsonl --lm LM_DIR [--subnet ID ...] [--beam 8 16 ...]

Runs each system once over the manifest (log-probs kept in memory), then decodes the grid below and prints
corpus WER per setting, best first. Never point it at a test set: its output picks the shipped defaults.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np


def dev_log_probs(checkpoint: str, manifest: str, subnets: list[str]) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    import torch

    from allinone.checkpoint import load_checkpoint
    from allinone.data.batching import DurationBatchSampler
    from allinone.data.manifest import read_manifest
    from allinone.evaluate import _load_batch
    from allinone.models.conformer import MIN_SAMPLES
    from allinone.spec import SubnetSpec

    ckpt = load_checkpoint(checkpoint)
    utts = read_manifest(manifest, tokenizer=ckpt.tokenizer()).utterances
    out = {s: [None] * len(utts) for s in subnets}
    ckpt.model.eval()
    with torch.no_grad():
        for batch in DurationBatchSampler([u.duration for u in utts], 60.0, shuffle=False):
            waves, lengths = _load_batch([utts[i] for i in batch], torch.device("cpu"), MIN_SAMPLES)
            for s in subnets:
                lp, ol = ckpt.model(waves, lengths, SubnetSpec.from_id(s))
                for b, i in enumerate(batch):
                    out[s][i] = lp[b, : int(ol[b])].float().numpy()
    return out, [u.text for u in utts], list(ckpt.tokenizer().vocab)


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    o = jiwer.process_words(refs, [h if h else "<empty>" for h in hyps])
    return (o.substitutions + o.deletions + o.insertions) / sum(len(r.split()) for r in refs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--subnet", action="append", default=None)
    p.add_argument("--beam", type=int, nargs="+", default=[8])
    p.add_argument("--lm-weight", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.3])
    p.add_argument("--word-bonus", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--oov-penalty", type=float, nargs="+", default=[-5.0, -10.0, -20.0])
    args = p.parse_args()

    from allinone_runtime.beam import BeamDecoder, DecoderOptions
    from allinone_runtime.ctc import decode_greedy, greedy_ids
    from allinone_runtime.ngram import load_lm

    subnets = args.subnet or ["d12-f512-h4-w32"]
    logps, refs, vocab = dev_log_probs(args.checkpoint, args.manifest, subnets)
    lm = load_lm(args.lm)
    base = BeamDecoder(vocab, lm, DecoderOptions(beam=args.beam[0]))
    for s in subnets:
        greedy = [decode_greedy(greedy_ids(x), vocab, 0.04)[0] for x in logps[s]]
        print(f"{s}: greedy WER {corpus_wer(refs, greedy):.2%}", flush=True)
        rows = []
        for beam, w, b, oov in itertools.product(args.beam, args.lm_weight, args.word_bonus, args.oov_penalty):
            dec = base.with_options(DecoderOptions(beam=beam, lm_weight=w, word_bonus=b, oov_penalty=oov))
            started = time.perf_counter()
            hyps = [dec.decode(x) for x in logps[s]]
            wer = corpus_wer(refs, hyps)
            rows.append((wer, beam, w, b, oov))
            print(f"{s}: beam {beam} lm_weight {w} word_bonus {b} oov_penalty {oov}: WER {wer:.2%} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
        rows.sort()
        print(f"{s}: best", rows[:5], flush=True)


if __name__ == "__main__":
    main()
