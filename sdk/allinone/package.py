"""Bundle writer: the manifest assembled in one place (`bundle_manifest`), then `model.pte` + `manifest.json`
in one directory, written whole or not at all (`write_bundle`).

The bundle format (its version, kind and reader) belongs to the device runtime, which must read it on a
device without this package: `allinone_runtime.bundle`. This module writes what that reader reads."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allinone.errors import BadInputError
from allinone.files import replace_dir_atomically
from allinone.quant_scheme import QuantScheme
from allinone_runtime.bundle import BUNDLE_FORMAT_VERSION, BUNDLE_KIND
from allinone_runtime.bundle import read_manifest as read_bundle_manifest

__all__ = ["BUNDLE_FORMAT_VERSION", "BundleSizes", "bundle_manifest", "WrittenBundle", "write_bundle",
           "read_bundle_manifest", "describe_bundle", "quantization_info", "io_signature", "versions"]

FRAME_SHIFT_S = 0.04  # 10 ms hop x4 subsampling


def quantization_info(scheme: QuantScheme, float_layers: list[str]) -> dict:
    """The manifest's `quantization` block: the system's scheme and the weight layers it left in float."""
    return scheme.to_manifest(float_layers)


def io_signature(vocab_size: int, lengths) -> dict:
    """The manifest's `io` block; `lengths` is the program's `allinone.export.InputLengths`."""
    return {"method": "forward",
            "input": {"name": "waveform", "dtype": "float32", "shape": [1, "N"], **lengths.to_dict()},
            "output": {"name": "log_probs", "dtype": "float32", "shape": [1, "T", vocab_size],
                       "frame_shift_s": FRAME_SHIFT_S, "blank_id": 0}}


def versions() -> dict:
    from importlib.metadata import version

    import allinone

    return {"torch": version("torch"), "executorch": version("executorch"), "torchao": version("torchao"),
            "allinone": allinone.__version__}


@dataclass(frozen=True)
class BundleSizes:
    """What the manifest says about a system's size: from its catalog entry in a build, else `allinone.size`."""

    params: int
    weight_bytes: int  # at the system's deployed precision
    macs_per_second: int
    float_full_weight_bytes: int  # the compression reference: the float full system's weight bytes


def bundle_manifest(model, program, sizes: BundleSizes, *, family: str, vocabulary: dict,
                    checkpoint: dict | None = None, verification: dict | None = None, profile=None,
                    expected: dict | None = None, latency: dict | None = None) -> dict[str, Any]:
    """The manifest of a bundle of `program` (an `allinone.export.ExportedProgram`) cut from the supernet
    `model`, less what `write_bundle` fills in. `checkpoint` ({path, weights_sha256}) and `verification` are
    left out when not given (a benchmark's random weights have neither); `latency` is {predicted, measured}."""
    from allinone.export import input_lengths

    spec = program.spec
    io = io_signature(model.cfg.vocab_size, input_lengths(model))
    # The Conformer's 40 ms frames are the default; other families (wav2vec2: 20 ms) state their own.
    io["output"]["frame_shift_s"] = getattr(model, "frame_shift_s", io["output"]["frame_shift_s"])
    described = {"family": family, "subnet": spec.to_dict()}
    if checkpoint is not None:
        described["checkpoint"] = checkpoint
    described.update(params=sizes.params, macs_per_second=sizes.macs_per_second)
    manifest = {
        "model": described,
        "quantization": quantization_info(spec.quant_scheme, program.float_layers),
        "vocabulary": vocabulary,
        "sample_rate": model.cfg.frontend.sample_rate,
        "io": io,
        "profile": profile.to_dict() if profile is not None else None,
        "expected": expected or {"wer": None, "cer": None, "manifest": None},
        "latency": latency or {"predicted": None, "measured": None},
        "sizes": {"pte_bytes": len(program.pte), "weight_bytes": sizes.weight_bytes,
                  "float_full_weight_bytes": sizes.float_full_weight_bytes,
                  "compression_ratio": round(sizes.float_full_weight_bytes / sizes.weight_bytes, 3)},
    }
    if verification is not None:
        manifest["verification"] = verification
    manifest["lowering"] = {"seconds": {k: round(v, 2) for k, v in program.seconds.items()},
                            "delegated_ops": sum(program.delegated_ops.values()),
                            "portable_ops": dict(program.portable_ops)}
    manifest["versions"] = versions()
    return manifest


@dataclass(frozen=True)
class WrittenBundle:
    """A bundle as `write_bundle` wrote it: its directory and the complete manifest in it."""

    path: Path
    manifest: dict[str, Any]

    @property
    def pte_sha256(self) -> str:
        return self.manifest["pte"]["sha256"]


def write_bundle(directory: str | Path, pte: bytes, manifest: dict, *, force: bool = False) -> WrittenBundle:
    """Write `model.pte` and `manifest.json` (with `format_version`, `kind`, `created`, `pte` filled in);
    returns the directory and the manifest written, so a caller never reads back what it has just written.

    The bundle is assembled in a temporary sibling directory and renamed into place, so an interrupted
    build leaves no half-written bundle. An existing `directory` is refused unless `force`."""
    directory = Path(directory)
    if directory.exists() and not force:
        raise BadInputError(f"{directory}: already exists (pass --force to replace it)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "kind": BUNDLE_KIND,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "pte": {"file": "model.pte", "sha256": hashlib.sha256(pte).hexdigest()},
    }
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        (staging / "model.pte").write_bytes(pte)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        replace_dir_atomically(staging, directory)  # --force: the old bundle is swapped out, then removed
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return WrittenBundle(directory, manifest)


def describe_bundle(directory: str | Path) -> str:
    """`allinone inspect`: what a bundle holds, its sizes and how much of it XNNPACK runs."""
    m = read_bundle_manifest(directory)
    try:
        return _describe(Path(directory), m)
    except (KeyError, TypeError, AttributeError, ValueError) as err:  # a manifest edited by hand, or by a newer tool
        raise BadInputError(f"bundle {Path(directory) / 'manifest.json'}: missing or malformed entry "
                            f"({err.__class__.__name__}: {err}); expected a manifest written by `allinone build`") from None


def _describe(directory: Path, m: dict) -> str:
    spec, quant, sizes = m["model"]["subnet"], m["quantization"], m["sizes"]
    lowering = m.get("lowering", {})
    portable = lowering.get("portable_ops", {})
    delegated = lowering.get("delegated_ops", 0)
    n_portable = sum(portable.values())
    share = delegated / max(1, delegated + n_portable)
    latency = m.get("latency", {})
    lines = [
        f"bundle      {directory}",
        f"system      {spec['id']} ({m['model']['family']}, {m['model']['params']:,} params, "
        f"{m['model']['macs_per_second'] / 1e6:.1f} MMAC per audio second)",
        f"weights     {quant['scheme']}" + (f", group {quant['group_size']}" if quant.get("group_size") else "")
        + (f"; float layers: {', '.join(quant['float_layers'])}" if quant.get("float_layers") else ""),
        f"sizes       model.pte {(directory / 'model.pte').stat().st_size:,} B; accounted weights "
        f"{sizes['weight_bytes']:,} B; "
        f"{sizes['compression_ratio']:.1f}x smaller than the float full system",
        f"profile     {(m.get('profile') or {}).get('name', '-')}",
        f"expected    WER {m['expected']['wer']:.2%}" if m.get("expected", {}).get("wer") is not None
        else "expected    WER not measured",
        f"operators   {delegated} delegated to XNNPACK, {n_portable} outside ({share:.0%} delegated)"
        + (f": {', '.join(f'{k} x{v}' for k, v in sorted(portable.items(), key=lambda kv: -kv[1]))}" if portable else ""),
    ]
    decoder = m.get("decoder")
    if decoder:  # a bundle built with --lm: its LM ships with it, so say how big it is
        lm, d = decoder["lm"], decoder["defaults"]
        lines.append(f"decoder     {decoder['type']}: LM order {lm['order']}, {lm['words']:,} words, {lm['bytes']:,} B "
                     f"({lm['dir']}/); beam {d['beam']}, LM weight {d['lm_weight']:g}, word bonus {d['word_bonus']:g}, "
                     f"OOV penalty {'none (strict lexicon)' if d['oov_penalty'] is None else format(d['oov_penalty'], 'g')}")
    for kind in ("predicted", "measured"):
        value = latency.get(kind)
        if value:
            lines.append(f"latency     {kind}: {value.get('ms', 0):.1f} ms for {value.get('reference_audio_s')} s "
                         f"(RTF {value.get('rtf', 0):.3f})")
    lines.append(f"built with  " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    return "\n".join(lines)
