"""Train a small wav2vec2-architecture model as an ordinary CTC model with transformers and save it in Hugging
Face format: the "fine-tuned foundation model" that issue 8's experiment then imports and compresses.

No self-supervised pre-training (nothing can be downloaded and 2 cores cannot afford it): the model is a
`Wav2Vec2ForCTC` trained from random weights on the synthetic corpus, with transformers' own loss, SpecAugment
and feature extractor (per-utterance normalisation, attention mask). The folder it writes is what a team
holding a fine-tuned checkpoint would have: config.json, model.safetensors, vocab.json, tokenizer and
preprocessor configs.

    .venv/bin/python benchmarks/wav2vec2_pretrain.py --corpus corpus/synth --out runs/wav2vec2/hf_model

Interrupted runs resume from WORK/state (saved every --save-minutes) when the same command is run again.
Needs the `hf` extra (transformers).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

from allinone.data.audio import load_audio
from allinone.data.batching import DurationBatchSampler
from allinone.data.manifest import read_manifest
from allinone.data.tokenizer import DEFAULT_VOCAB
from allinone.files import atomic_write_text

# HF spelling of our character vocabulary, in the same order so token ids agree: blank -> <pad>, space -> |.
HF_VOCAB = {"<pad>": 0, "|": 1, **{s: i for i, s in enumerate(DEFAULT_VOCAB) if i > 1}}
HF_VOCAB["<unk>"] = len(HF_VOCAB)


def model_config(args):
    from transformers import Wav2Vec2Config

    # wav2vec2_small's encoder (hidden 192, 8 layers, 6 heads of 32, FFN 768) behind a 7 x 64-channel feature
    # encoder: half the channels of wav2vec2_small's, which halves a step on a CPU. Pre-norm ("stable layer
    # norm") layers with a layer-norm feature encoder, so padded batches are exact with an attention mask.
    return Wav2Vec2Config(
        vocab_size=len(HF_VOCAB), hidden_size=192, num_hidden_layers=8, num_attention_heads=6, intermediate_size=768,
        conv_dim=(64,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=16, hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.05, mask_time_length=5,
        pad_token_id=HF_VOCAB["<pad>"], ctc_loss_reduction="mean", ctc_zero_infinity=True)


def learning_rate(step: int, args) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak (the allinone trainer's schedule)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_hf_folder(model, feature_extractor, out: Path) -> None:
    """config.json + model.safetensors + vocab/tokenizer/preprocessor files, written beside and renamed."""
    from transformers import Wav2Vec2CTCTokenizer

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    feature_extractor.save_pretrained(tmp)
    (tmp / "vocab.json").write_text(json.dumps(HF_VOCAB, indent=1))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|", bos_token=None, eos_token=None)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus/synth")
    parser.add_argument("--out", default="runs/wav2vec2/hf_model", help="the Hugging Face folder written at the end")
    parser.add_argument("--work", help="resumable training state (default: OUT.state)")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=250)
    parser.add_argument("--batch-seconds", type=float, default=24.0)
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".state")
    if (out / "config.json").is_file():
        print(f"{out}: already trained")
        return
    torch.manual_seed(args.seed)
    model = Wav2Vec2ForCTC(model_config(args))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step, cpu_seconds = 0, 0.0
    if (work / "state.json").is_file():
        state = json.loads((work / "state.json").read_text())
        model = Wav2Vec2ForCTC.from_pretrained(work / "model")
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        optimizer.load_state_dict(torch.load(work / "optimizer.pt", weights_only=True))
        step, cpu_seconds = state["step"], state["cpu_seconds"]
        print(f"resuming at step {step}", flush=True)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    utts = read_manifest(Path(args.corpus) / "train.jsonl").utterances
    targets = [torch.tensor([HF_VOCAB["|" if c == " " else c] for c in u.text]) for u in utts]
    sampler = DurationBatchSampler([u.duration for u in utts], args.batch_seconds, seed=args.seed)
    per_epoch = len(sampler)

    def save() -> None:
        tmp = work.with_name(work.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp / "model", safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        atomic_write_text(tmp / "state.json", json.dumps({"step": step, "cpu_seconds": cpu_seconds}))
        shutil.rmtree(work, ignore_errors=True)
        tmp.rename(work)

    model.train()
    last_save, log = time.monotonic(), out.with_name(out.name + ".log")
    while step < args.steps:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        for batch in list(sampler)[skip:]:
            if step >= args.steps:
                break
            cpu0 = time.process_time()
            waves = [load_audio(utts[i].audio_filepath) for i in batch]
            inputs = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt",
                               return_attention_mask=True)
            labels = torch.nn.utils.rnn.pad_sequence([targets[i] for i in batch], batch_first=True,
                                                     padding_value=-100)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args)
            loss = model(inputs.input_values, attention_mask=inputs.attention_mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            cpu_seconds += time.process_time() - cpu0
            if step % 10 == 0:
                with open(log, "a") as f:
                    f.write(json.dumps({"step": step, "ctc": round(float(loss), 4), "lr": learning_rate(step, args),
                                        "cpu_seconds": round(cpu_seconds, 1)}) + "\n")
            if step % 50 == 0:
                print(f"step {step}/{args.steps} ctc {float(loss):.3f} cpu {cpu_seconds:.0f} s", flush=True)
            if time.monotonic() - last_save > args.save_minutes * 60:
                save()
                last_save = time.monotonic()
    model.eval()
    save_hf_folder(model, extractor, out)
    atomic_write_text(out.with_name(out.name + ".json"), json.dumps(
        {"steps": step, "cpu_seconds": round(cpu_seconds, 1), "params": sum(p.numel() for p in model.parameters()),
         "torch_threads": torch.get_num_threads()}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(f"saved {out} after {step} steps, {cpu_seconds:.0f} CPU s")


if __name__ == "__main__":
    main()
