"""Put an LM and decoder defaults into a bundle: `build --lm`, `export --lm`, `allinone lm attach`.

The bundle is copied to a temporary sibling directory, the LM directory goes in as `lm/`, the manifest gets
its `decoder` block (docs/formats.md), the copy is checked the way a device opens it (`Bundle.open`, every
LM file's sha256, the LM spelled with the model's units) and a verification clip is transcribed greedily
and by beam search (both texts recorded); then the copy is renamed into place. An interruption leaves the
old bundle (or no new one), never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from allinone.errors import BadInputError
from allinone.files import replace_dir_atomically

__all__ = ["attach_lm"]


def attach_lm(bundle: str | Path, lm_dir: str | Path, options=None, *, out: str | Path | None = None,
              audio: str | Path | None = None, force: bool = False) -> Path:
    """Write `out` (default: `bundle` itself, replaced) = `bundle` + LM + decoder defaults (`DecoderOptions`,
    default settings if None). `audio` is the verification clip (default: the packaged sample)."""
    import importlib.resources

    from allinone_runtime.beam import BeamDecoder, DecoderOptions
    from allinone_runtime.bundle import Bundle
    from allinone_runtime.decoder import DECODER_TYPE
    from allinone_runtime.ngram import check_lm_files, load_lm
    from allinone_runtime.transcribe import Transcriber

    bundle, lm_dir = Path(bundle), Path(lm_dir)
    out = Path(out) if out is not None else bundle
    if out != bundle and out.exists() and not force:
        raise BadInputError(f"{out}: already exists (pass --force to replace it)")
    source = Bundle.open(bundle)
    options = (options or DecoderOptions()).check("decoder options")
    meta, arpa_path, _ = check_lm_files(lm_dir)
    lm = load_lm(lm_dir)
    BeamDecoder(source.vocab, lm, options)  # refuses an LM the model's units cannot spell, before any copy
    audio = Path(audio) if audio else Path(str(importlib.resources.files("allinone") / "assets" / "sample.wav"))

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for item in bundle.iterdir():
            if item.name != "lm" and item.is_file():
                shutil.copy2(item, staging / item.name)
        (staging / "lm").mkdir()
        files = []
        for name in ("lm.json", arpa_path.name):
            data = (lm_dir / name).read_bytes()
            (staging / "lm" / name).write_bytes(data)
            files.append({"file": f"lm/{name}", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
        manifest = json.loads((staging / "manifest.json").read_text())
        manifest["decoder"] = {
            "type": DECODER_TYPE,
            "lm": {"dir": "lm", "format_version": meta["format_version"], "order": meta["order"],
                   "words": len(lm.vocabulary), "bytes": sum(f["bytes"] for f in files), "files": files},
            "defaults": options.to_dict(),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        greedy = Transcriber(staging, greedy=True).transcribe(audio).text
        beam = Transcriber(staging).transcribe(audio).text
        manifest["decoder"]["verification"] = {"audio": audio.name, "greedy_text": greedy, "text": beam}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        Transcriber(staging)  # the final manifest opens
        replace_dir_atomically(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
