"""Build verified bundles: checkpoint + nested system -> .pte -> checked against eager -> bundle directory."""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from allinone.errors import VerificationError
from allinone.spec import SubnetSpec

__all__ = ["export_bundle", "verify_program", "sample_audio", "Verification"]

log = logging.getLogger(__name__)

# .pte log-probs vs the eager program: float programs agree to float rounding; quantized ones may differ where
# XNNPACK rounds a dynamic activation scale differently (measured <= ~0.02 on the test models).
MAX_ABS_DIFF = {32: 1e-3, 8: 0.25, 4: 0.25}


def sample_audio() -> torch.Tensor:
    """The real speech clip shipped with the package, (1, N) float32 at 16 kHz."""
    from allinone.data.audio import load_audio

    path = importlib.resources.files("allinone") / "assets" / "sample.wav"
    return torch.from_numpy(load_audio(str(path)))[None]


@dataclass
class Verification:
    max_abs_diff: float
    transcript: str  # greedy transcript of the .pte (identical to the eager one, or the build fails)
    audio: str


def verify_program(pte: bytes, eager: torch.nn.Module, tokenizer, weight_bits: int,
                   audio: torch.Tensor | None = None, audio_name: str = "sample.wav") -> Verification:
    """Run the .pte in the ExecuTorch runtime on real speech; its log-probs must match the eager program's
    within tolerance and its greedy transcript must be identical, else VerificationError."""
    from executorch.runtime import Runtime

    waveform = sample_audio() if audio is None else audio
    method = Runtime.get().load_program(pte).load_method("forward")
    got = method.execute([waveform])[0]
    with torch.no_grad():
        expected = eager(waveform)
    if got.shape != expected.shape:
        raise VerificationError(f"verification on {audio_name}: .pte output shape {tuple(got.shape)} differs from "
                                f"eager {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    text_pte = tokenizer.decode_ctc(got[0].argmax(-1).tolist())
    text_eager = tokenizer.decode_ctc(expected[0].argmax(-1).tolist())
    if diff > MAX_ABS_DIFF[weight_bits] or text_pte != text_eager:
        raise VerificationError(f"verification on {audio_name}: .pte log-probs differ from eager by {diff:.3g} "
                                f"(limit {MAX_ABS_DIFF[weight_bits]}), transcripts {text_pte!r} vs {text_eager!r}")
    return Verification(diff, text_pte, audio_name)


def export_bundle(checkpoint, spec: SubnetSpec | str, out: str | Path, *, profile=None, expected: dict | None = None,
                  predicted_latency: dict | None = None, audio: torch.Tensor | None = None, force: bool = False,
                  exported=None) -> Path:
    """Lower `spec` of `checkpoint` (a path or a loaded Checkpoint), verify the .pte on real speech and write
    the bundle directory `out`. `exported` reuses an already lowered program of the same spec."""
    from allinone.checkpoint import Checkpoint, load_checkpoint
    from allinone.export import MAX_SAMPLES, export_subnet
    from allinone.models.conformer import MIN_SAMPLES
    from allinone.package import io_signature, quantization_info, versions, write_bundle
    from allinone.size import subnet_size

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    spec = SubnetSpec.from_id(spec) if isinstance(spec, str) else spec
    ckpt.model.search_space.validate(spec)
    tokenizer = ckpt.tokenizer()
    program = exported or export_subnet(ckpt.model, spec)
    check = verify_program(program.pte, program.module, tokenizer, spec.weight_bits, audio)
    size = subnet_size(ckpt.model, spec)
    full = subnet_size(ckpt.model, ckpt.model.search_space.largest())
    manifest = {
        "model": {"family": ckpt.family, "subnet": spec.to_dict(),
                  "checkpoint": {"path": str(ckpt.path), "weights_sha256": ckpt.config["weights_sha256"]},
                  "params": size.params, "macs_per_second": size.macs_per_second},
        "quantization": quantization_info(spec.weight_bits, program.float_layers),
        "vocabulary": ckpt.config["vocabulary"],
        "sample_rate": ckpt.model.cfg.frontend.sample_rate,
        "io": io_signature(ckpt.model.cfg.vocab_size, MIN_SAMPLES, MAX_SAMPLES),
        "profile": profile.to_dict() if profile is not None else None,
        "expected": expected or {"wer": None, "cer": None, "manifest": None},
        "latency": {"predicted": predicted_latency, "measured": None},
        "sizes": {"pte_bytes": len(program.pte), "weight_bytes": size.weight_bytes,
                  "float_full_weight_bytes": full.weight_bytes,
                  "compression_ratio": round(full.weight_bytes / size.weight_bytes, 3)},
        "verification": {"audio": check.audio, "max_abs_diff": check.max_abs_diff, "transcript": check.transcript},
        "lowering": {"seconds": {k: round(v, 2) for k, v in program.seconds.items()},
                     "delegated_ops": sum(program.delegated_ops.values()),
                     "portable_ops": dict(program.portable_ops)},
        "versions": versions(),
    }
    return write_bundle(out, program.pte, manifest, force=force)
