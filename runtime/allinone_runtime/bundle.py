"""Open a bundle directory (`model.pte` + `manifest.json`) and check it before anything runs it.

Checks, in order, each failing with one line naming the file and what was expected: the directory and
`manifest.json` exist and parse; `format_version` is 1 or 2 and `kind` is `allinone-bundle`; the keys the runtime
reads are present and well-typed; `model.pte` exists and its sha256 equals the manifest's; the installed
ExecuTorch can run a program built by the manifest's ExecuTorch version (`check_executorch_compat`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import read_json_file

__all__ = ["BUNDLE_FORMAT_VERSION", "READABLE_BUNDLE_VERSIONS", "BUNDLE_KIND", "Bundle", "fit_length",
           "read_manifest", "check_executorch_compat", "installed_executorch_version"]

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 2  # 2 added io.input.length_step: the program takes min_samples + k * length_step samples
READABLE_BUNDLE_VERSIONS = (1, 2)
BUNDLE_KIND = "allinone-bundle"


def installed_executorch_version() -> str:
    try:
        return version("executorch")
    except PackageNotFoundError:
        raise RuntimeInputError("executorch is not installed; `pip install executorch` to run bundles") from None


def _release(text: str, what: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise RuntimeInputError(f"{what}: expected an ExecuTorch version like '1.5.1', got {text!r}")
    return int(match[1]), int(match[2])


def check_executorch_compat(built: str, installed: str, where: str = "bundle") -> str:
    """Can an ExecuTorch runtime of version `installed` run a .pte built by ExecuTorch `built`?

    ExecuTorch's runtime compatibility policy (runtime/COMPATIBILITY.md) guarantees backward compatibility:
    a .pte built with release X.Y runs on runtimes of X.Y and of the next non-patch release (X.Y+1, or
    X+1.0 after a major); patch releases never change the format. There is no forward compatibility: an
    older runtime may not read a newer .pte. So:

    - installed older than built (by major.minor)  -> refused;
    - same major.minor, or the next non-patch release -> "guaranteed";
    - later releases -> "not guaranteed": allowed (newer runtimes usually keep reading old programs), with
      a warning; a program the runtime then rejects fails at load with the runtime's own message.
    """
    b, i = _release(built, f"{where}: versions.executorch"), _release(installed, "installed executorch")
    if i < b:
        raise RuntimeInputError(f"{where}: built with executorch {built}, but the installed executorch is {installed}; "
                                f"an older runtime cannot be trusted with a newer program (no forward "
                                f"compatibility): install executorch>={b[0]}.{b[1]} or rebuild the bundle")
    if i == b or i == (b[0], b[1] + 1) or i == (b[0] + 1, 0):
        return "guaranteed"
    log.warning("%s: built with executorch %s; installed %s is past the releases ExecuTorch guarantees to read it "
                "(%d.%d and the next one); rebuild the bundle if loading fails", where, built, installed, *b)
    return "not guaranteed"


def _get(manifest: dict, dotted: str, kind: type | tuple, where: str):
    value = manifest
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise RuntimeInputError(f"{where}: {dotted}: missing; the runtime needs it (see docs/formats.md, "
                                    f"Bundle manifest)")
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RuntimeInputError(f"{where}: {dotted}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_envelope(directory: Path) -> tuple[dict, str]:
    """manifest.json parsed, with its format version and kind checked; (manifest, its path for messages)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RuntimeInputError(f"{directory}: not a bundle directory (expected a folder holding model.pte "
                                f"and manifest.json)")
    where = str(directory / "manifest.json")
    try:
        manifest = read_json_file(directory / "manifest.json", "a bundle manifest")
    except FileNotFoundError:
        raise RuntimeInputError(f"{where}: missing; a bundle is model.pte + manifest.json "
                                f"(rebuild it with `allinone build`)") from None
    if not isinstance(manifest, dict):
        raise RuntimeInputError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    fv = manifest.get("format_version")
    if fv not in READABLE_BUNDLE_VERSIONS or isinstance(fv, bool):
        readable = " or ".join(str(v) for v in READABLE_BUNDLE_VERSIONS)
        raise RuntimeInputError(f"{where}: format_version: expected {readable}, got {fv!r}; this runtime reads "
                                f"bundle formats {readable} only")
    if manifest.get("kind") != BUNDLE_KIND:
        raise RuntimeInputError(f"{where}: kind: expected {BUNDLE_KIND!r}, got {manifest.get('kind')!r}")
    return manifest, where


def fit_length(n_samples: int, min_samples: int, max_samples: int, length_step: int) -> int:
    """The input length a program call takes for `n_samples` of audio: `min_samples` when shorter (the audio
    is zero-padded), else the longest `min_samples + k * length_step` not over `n_samples` (the cut tail, under
    one output frame of audio, is audio the network never reads: identical log-probs). Over `max_samples`
    after that: RuntimeInputError (the caller windows longer audio)."""
    if n_samples <= min_samples:
        return min_samples
    fitted = min_samples + (n_samples - min_samples) // length_step * length_step
    if fitted > max_samples:
        raise RuntimeInputError(f"{n_samples} samples is longer than one call of the program ({max_samples} "
                                f"samples); expected shorter audio")
    return fitted


def _check_pte(directory: Path, manifest: dict, where: str) -> tuple[Path, str]:
    """The program's path and sha256, after checking it exists and matches the manifest's sha256."""
    expected_sha = _get(manifest, "pte.sha256", str, where)
    pte_path = directory / _get(manifest, "pte.file", str, where)
    if not pte_path.is_file():
        raise RuntimeInputError(f"{pte_path}: missing; the manifest names it as the bundle's program")
    actual_sha = _sha256(pte_path)
    if actual_sha != expected_sha.lower():
        raise RuntimeInputError(f"{pte_path}: sha256 {actual_sha[:12]}... differs from the manifest's "
                                f"{expected_sha[:12]}...; the file is corrupted or was replaced "
                                f"(rebuild the bundle)")
    return pte_path, actual_sha


def read_manifest(directory: str | Path) -> dict:
    """The manifest of bundle `directory` after the checks every reader needs (it parses, format version,
    kind, model.pte matches its sha256), without the runtime's key checks: `allinone inspect` reads bundles
    with it. RuntimeInputError with one line on any problem."""
    directory = Path(directory)
    manifest, where = _read_envelope(directory)
    _check_pte(directory, manifest, where)
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: where its program is and what the runtime needs from its manifest."""

    path: Path
    manifest: dict
    pte_path: Path
    pte_bytes: int
    pte_sha256: str
    vocab: tuple[str, ...]  # index 0 is the CTC blank; " " separates words
    sample_rate: int
    min_samples: int  # shortest input the program takes; shorter audio is zero-padded
    max_samples: int  # longest input the program takes; longer audio is chunked
    length_step: int  # the program takes min_samples + k * length_step samples (format 1: any length, 1)
    frame_shift_s: float  # output frame t covers audio from t * frame_shift_s
    subnet: str
    weight_bits: int
    executorch_built: str
    executorch_compat: str  # "guaranteed" or "not guaranteed" (see check_executorch_compat)

    @classmethod
    def open(cls, directory: str | Path, *, installed_executorch: str | None = None) -> "Bundle":
        """Check and open the bundle in `directory`; raises RuntimeInputError with one line on any problem."""
        directory = Path(directory)
        manifest, where = _read_envelope(directory)

        vocab = _get(manifest, "vocabulary.vocab", list, where)
        if len(vocab) < 2 or not all(isinstance(s, str) for s in vocab):
            raise RuntimeInputError(f"{where}: vocabulary.vocab: expected a list of at least 2 strings")
        blanks = _get(manifest, "vocabulary.blank_id", int, where), _get(manifest, "io.output.blank_id", int, where)
        if blanks != (0, 0):
            raise RuntimeInputError(f"{where}: vocabulary.blank_id: expected 0 (the CTC blank comes first)")
        sample_rate = _get(manifest, "sample_rate", int, where)
        min_samples = _get(manifest, "io.input.min_samples", int, where)
        max_samples = _get(manifest, "io.input.max_samples", int, where)
        if not 0 < min_samples <= max_samples or sample_rate <= 0:
            raise RuntimeInputError(f"{where}: io.input: expected 0 < min_samples <= max_samples and sample_rate > 0, "
                                    f"got {min_samples}, {max_samples}, {sample_rate}")
        length_step = _get(manifest, "io.input.length_step", int, where) if manifest["format_version"] >= 2 else 1
        if length_step < 1 or (max_samples - min_samples) % length_step:
            raise RuntimeInputError(f"{where}: io.input.length_step: expected >= 1 and dividing max_samples - "
                                    f"min_samples, got {length_step} ({min_samples}-{max_samples})")
        frame_shift_s = float(_get(manifest, "io.output.frame_shift_s", (int, float), where))
        if frame_shift_s <= 0:
            raise RuntimeInputError(f"{where}: io.output.frame_shift_s: expected > 0, got {frame_shift_s}")
        if _get(manifest, "io.method", str, where) != "forward":
            raise RuntimeInputError(f"{where}: io.method: expected 'forward', got {manifest['io']['method']!r}")
        subnet = _get(manifest, "model.subnet.id", str, where)
        weight_bits = _get(manifest, "quantization.weight_bits", int, where)
        built = _get(manifest, "versions.executorch", str, where)
        pte_path, actual_sha = _check_pte(directory, manifest, where)
        compat = check_executorch_compat(built, installed_executorch or installed_executorch_version(), where)
        return cls(directory, manifest, pte_path, pte_path.stat().st_size, actual_sha, tuple(vocab), sample_rate,
                   min_samples, max_samples, length_step, frame_shift_s, subnet, weight_bits, built, compat)

    def fit_input(self, samples):
        """(N,) float32 samples as one program call takes them: zero-padded to `min_samples`, or cut to the
        longest length the program takes (`fit_length`)."""
        import numpy as np

        n = fit_length(len(samples), self.min_samples, self.max_samples, self.length_step)
        if n > len(samples):
            return np.concatenate([samples, np.zeros(n - len(samples), np.float32)])
        return samples[:n]

    @property
    def profile_name(self) -> str | None:
        profile = self.manifest.get("profile")
        return profile.get("name") if isinstance(profile, dict) else None

    @property
    def macs_per_second(self) -> int | float | None:
        return (self.manifest.get("model") or {}).get("macs_per_second")
