"""Audio in: decode with soundfile, check, mix down to mono, resample to 16 kHz.

Every model, manifest and bundle in allinone works on 16 kHz mono float32 waveforms in [-1, 1]. `load_audio`
reads through the runtime's one audio reader (`allinone_runtime.audio.read_audio`: soxr, streamed in blocks),
so a file is heard at evaluation time exactly as on the device: missing, unreadable, empty, truncated (fewer
frames than the header says) or NaN/infinite samples are errors; samples beyond full scale are a warning.

`resample` (polyphase) is not for reading files: it makes audio (the synthetic corpus, augmentation), whose
bytes must stay reproducible from corpus format 1 on.
"""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from allinone.errors import BadInputError
from allinone_runtime.audio import full_scale_warning, read_audio, wav_truncation
from allinone_runtime.errors import RuntimeInputError

__all__ = ["SAMPLE_RATE", "load_audio", "scan_audio", "resample", "audio_duration", "write_wav_atomic"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SILENCE_PEAK = 10 ** (-60 / 20)  # the runtime's silence threshold (-60 dBFS)
CLIP_LEVEL = 0.999  # |sample| at or above this is at full scale (16-bit full scale is 32767/32768)
CLIPPED_SHARE = 0.001  # more samples than this at full scale is clipping, not a loud peak or two


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase (anti-aliased) resampling of a (N,) waveform; returns float32 (M,), M ~ N * target_sr / orig_sr.
    For making audio (synthesis, augmentation) only; files are read with `load_audio`."""
    if orig_sr == target_sr:
        return np.asarray(waveform, dtype=np.float32)
    from scipy.signal import resample_poly  # scipy is slow to import; only pay for it when resampling

    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(waveform, target_sr // g, orig_sr // g).astype(np.float32)


def _info(path: Path) -> sf._SoundFileInfo:
    if not path.is_file():
        raise BadInputError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
        truncated = wav_truncation(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise BadInputError(f"{path}: unreadable audio ({str(err).splitlines()[0]}); expected a WAV/FLAC/OGG "
                            f"file") from None
    if truncated:
        raise BadInputError(f"{path}: {truncated}; expected a complete audio file")
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadInputError(f"{path}: empty audio (0 samples)")
    return info


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding). Raises BadInputError if missing, unreadable,
    empty, or a WAV file whose data is shorter than its header says."""
    info = _info(Path(path))
    return info.frames / info.samplerate


def _read_checked(path: Path) -> tuple[np.ndarray, int]:
    """All samples of `path`, (N, C) float32, and their rate; BadInputError when missing, unreadable, empty,
    shorter than its header says, or holding NaN/infinite samples (a model turns them into NaN scores)."""
    info = _info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise BadInputError(f"{path}: unreadable audio ({str(err).splitlines()[0]})") from None
    if data.shape[0] == 0:
        raise BadInputError(f"{path}: empty audio (0 samples)")
    if data.shape[0] < info.frames:
        raise BadInputError(f"{path}: truncated: the header promises {info.frames} frames, decoding gave "
                            f"{data.shape[0]}; expected a complete audio file")
    bad = ~np.isfinite(data).all(axis=1)  # (N,)
    if bad.any():
        raise BadInputError(f"{path}: {int(bad.sum())} NaN or infinite samples (first at "
                            f"{int(np.argmax(bad)) / sr:.3f} s); expected finite samples in [-1, 1]")
    return data, sr


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read `path` as float32 mono (N,) at `sample_rate`: channels are averaged, other rates resampled (soxr),
    by the runtime's reader.

    Raises BadInputError (naming the file) when it is missing, unreadable, empty, truncated or not finite;
    samples beyond full scale are logged as a warning with their peak and kept as they are.
    """
    try:
        return read_audio(path, sample_rate).samples
    except RuntimeInputError as err:
        raise BadInputError(str(err)) from None


def scan_audio(path: str | Path) -> tuple[float, list[str]]:
    """Decode every sample of `path` (`data check --deep`): its duration in seconds and warnings for samples
    beyond full scale, clipping and silence. Raises BadInputError as `load_audio` does."""
    path = Path(path)
    data, sr = _read_checked(path)
    warnings = [w for w in [full_scale_warning(data, str(path))] if w]
    magnitude = np.abs(data)  # (N, C)
    peak = float(magnitude.max())
    clipped = float((magnitude >= CLIP_LEVEL).mean())
    if clipped > CLIPPED_SHARE and peak <= 1.0:  # beyond full scale is already reported above
        warnings.append(f"{path}: clipped: {clipped:.2%} of samples at full scale; expected under {CLIPPED_SHARE:.1%}")
    if peak < SILENCE_PEAK:
        level = f"{20 * np.log10(peak):.1f} dBFS" if peak > 0 else "digital zero"
        warnings.append(f"{path}: silent: peak {level}, below -60 dBFS; expected speech")
    return data.shape[0] / sr, warnings


def write_wav_atomic(path: str | Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a (N,) float waveform as 16-bit PCM WAV via a temp file + rename, so `path` is never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(waveform, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
