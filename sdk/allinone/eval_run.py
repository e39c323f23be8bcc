"""`allinone eval`: score nested systems of a checkpoint on a manifest and keep their hypotheses."""

from __future__ import annotations

import os
from pathlib import Path

from allinone.errors import BadInputError
from allinone.spec import SubnetSpec

__all__ = ["evaluate_checkpoint", "default_hyps_dir"]


def default_hyps_dir(checkpoint: str | Path, manifest: str | Path) -> Path:
    """CHECKPOINT/eval/NAME, NAME being the manifest's file (or folder) name without its suffix. Taken from the
    absolute path, so a manifest given as `.`, `..` or `dir/` still names a folder inside eval/, never eval/
    or the checkpoint itself."""
    return Path(checkpoint) / "eval" / (Path(os.path.abspath(manifest)).stem or "manifest")


def _choose_specs(ckpt, subnets: list[str] | None, all_systems: bool) -> list[SubnetSpec]:
    space = ckpt.model.search_space
    if all_systems:
        return space.enumerate()
    if subnets:
        return [space.validate(SubnetSpec.from_id(s)) for s in subnets]
    return list(ckpt.targets)


def evaluate_checkpoint(checkpoint: str | Path, manifest: str | Path, *, subnets: list[str] | None = None,
                        all_systems: bool = False, hyps_dir: str | Path | None = None, progress: bool = True,
                        lm: str | Path | None = None, decoder=None, timings: dict | None = None):
    """Evaluate the chosen systems (default: the checkpoint's targets) and save `SUBNET.hyps.jsonl` per system
    under `hyps_dir` (default CHECKPOINT/eval/MANIFEST-NAME). Returns the list of SystemResult.

    With `lm` (an LM directory), each system is also decoded by CTC prefix beam search with that LM
    (`decoder`: `allinone_runtime.beam.DecoderOptions`, default settings if None) and scored as `SUBNET+beam`;
    `timings` receives network, greedy and beam seconds (see `allinone.evaluate.evaluate`)."""
    from allinone.checkpoint import load_checkpoint
    from allinone.data.manifest import read_manifest
    from allinone.evaluate import evaluate, save_hypotheses

    ckpt = load_checkpoint(checkpoint)
    tokenizer = ckpt.tokenizer()
    read = read_manifest(manifest, tokenizer=tokenizer)
    if not read.utterances:
        raise BadInputError(f"manifest {manifest}: no usable utterances ({read.skipped} skipped)")
    specs = _choose_specs(ckpt, subnets, all_systems)
    decoders = None
    if lm is not None:
        from allinone_runtime.beam import BeamDecoder, DecoderOptions
        from allinone_runtime.ngram import load_lm

        decoders = {"beam": BeamDecoder(list(tokenizer.vocab), load_lm(lm), decoder or DecoderOptions()).decode}
    results = evaluate(ckpt.model, specs, read.utterances, tokenizer, progress=progress, decoders=decoders,
                       timings=timings)
    out = Path(hyps_dir) if hyps_dir else default_hyps_dir(checkpoint, manifest)
    for result in results:
        save_hypotheses(result, out / f"{result.subnet}.hyps.jsonl", checkpoint=str(checkpoint), manifest=str(manifest))
    return results
