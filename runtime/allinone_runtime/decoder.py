"""A bundle's decoder: the optional `decoder` block of manifest.json and the LM files it lists.

    "decoder": {"type": "ctc_prefix_beam",
                "lm": {"dir": "lm", "order": 3, "words": 4349, "format_version": 1,
                       "files": [{"file": "lm/lm.json", "sha256": "...", "bytes": 512}, {"file": "lm/lm.arpa", ...}]},
                "defaults": {"beam": 8, "lm_weight": ..., "word_bonus": ..., "oov_penalty": ..., "token_prune": 10.0},
                "verification": {"audio": "sample.wav", "text": "..."}}

A bundle without the block decodes greedily. Every listed file must exist with the recorded bytes and
sha256 (one line naming the file otherwise), then the LM directory is read by `ngram.load_lm`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from allinone_runtime.beam import BeamDecoder, DecoderOptions, Hotword
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.ngram import load_lm

__all__ = ["DECODER_TYPE", "decoder_defaults", "bundle_decoder", "check_decoder_files"]

DECODER_TYPE = "ctc_prefix_beam"


def _block(manifest: dict, where: str) -> dict | None:
    block = manifest.get("decoder")
    if block is None:
        return None
    if not isinstance(block, dict) or block.get("type") != DECODER_TYPE:
        raise RuntimeInputError(f"{where}: decoder.type: expected {DECODER_TYPE!r}; this runtime knows no other "
                                f"decoder")
    lm = block.get("lm")
    if not isinstance(lm, dict) or not isinstance(lm.get("dir"), str) or not isinstance(lm.get("files"), list):
        raise RuntimeInputError(f"{where}: decoder.lm: expected {{dir, files: [{{file, sha256, bytes}}]}}")
    return block


def decoder_defaults(manifest: dict, where: str = "manifest.json") -> DecoderOptions | None:
    """The manifest's decoder settings, or None for a greedy bundle."""
    block = _block(manifest, where)
    return None if block is None else DecoderOptions.from_dict(block.get("defaults", {}), f"{where}: decoder.defaults")


def check_decoder_files(directory: Path, block: dict, where: str) -> Path:
    """Every file the decoder block lists exists with its recorded bytes and sha256; returns the LM directory."""
    for entry in block["lm"]["files"]:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), t) for k, t in
                                                  (("file", str), ("sha256", str), ("bytes", int))):
            raise RuntimeInputError(f"{where}: decoder.lm.files: expected entries {{file, sha256, bytes}}")
        name = entry["file"]
        if name.startswith("/") or ".." in Path(name).parts:
            raise RuntimeInputError(f"{where}: decoder.lm.files: {name!r} is outside the bundle")
        path = directory / name
        if not path.is_file():
            raise RuntimeInputError(f"{path}: missing; the manifest lists it as the decoder's LM")
        data = path.read_bytes()
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"].lower():
            raise RuntimeInputError(f"{path}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}...; "
                                    f"the manifest records {entry['bytes']:,} bytes, {entry['sha256'][:12]}...: the "
                                    f"file is damaged or was replaced (rebuild the bundle)")
    return directory / block["lm"]["dir"]


def bundle_decoder(bundle, *, greedy: bool = False, overrides: dict | None = None,
                   hotwords: Sequence[Hotword] = ()) -> BeamDecoder | None:
    """The beam-search decoder of an opened `Bundle` (its defaults with `overrides` applied), or None when the
    bundle has no decoder block or `greedy` is asked for. Hotwords need a bundle with an LM."""
    where = str(bundle.path / "manifest.json")
    block = _block(bundle.manifest, where)
    if greedy or block is None:
        if hotwords and not greedy:
            raise RuntimeInputError(f"{bundle.path}: --hotwords needs a bundle built with an LM (`allinone build "
                                    f"--lm LM_DIR`); this one decodes greedily")
        return None
    options = decoder_defaults(bundle.manifest, where)
    if overrides:
        options = replace(options, **overrides).check("decoder options")
    lm = load_lm(check_decoder_files(bundle.path, block, where))
    return BeamDecoder(bundle.vocab, lm, options, hotwords)
