"""Audio in: decode with soundfile, mix down to mono, resample to 16 kHz.

Every model, manifest and bundle in allinone works on 16 kHz mono float32 waveforms in [-1, 1].
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from allinone.errors import BadInputError

__all__ = ["SAMPLE_RATE", "load_audio", "resample", "audio_duration", "write_wav_atomic"]

SAMPLE_RATE = 16000


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase (anti-aliased) resampling of a (N,) waveform; returns float32 (M,), M ~ N * target_sr / orig_sr."""
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
    except (sf.LibsndfileError, RuntimeError) as err:
        raise BadInputError(f"{path}: unreadable audio ({err}); expected a WAV/FLAC/OGG file") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadInputError(f"{path}: empty audio (0 samples)")
    return info


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding). Raises BadInputError if missing/unreadable/empty."""
    info = _info(Path(path))
    return info.frames / info.samplerate


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read `path` as float32 mono (N,) at `sample_rate`: channels are averaged, other rates resampled.

    Raises BadInputError (naming the file) when it is missing, unreadable or empty.
    """
    path = Path(path)
    _info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise BadInputError(f"{path}: unreadable audio ({err})") from None
    if data.shape[0] == 0:
        raise BadInputError(f"{path}: empty audio (0 samples)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (N,)
    return resample(mono, sr, sample_rate)


def write_wav_atomic(path: str | Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a (N,) float waveform as 16-bit PCM WAV via a temp file + rename, so `path` is never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(waveform, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
