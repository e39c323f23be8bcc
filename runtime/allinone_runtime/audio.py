"""Audio in for the runtime: read a file or take an array, mix to mono, resample to the bundle's rate, check it.

Kept separate from `allinone.data.audio` on purpose: the runtime never imports allinone, and needs no scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from allinone_runtime.errors import RuntimeInputError

__all__ = ["Audio", "read_audio", "prepare_audio", "resample_fft"]


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples at the model's rate, and what was done to get them."""

    samples: np.ndarray  # (N,) float32
    sample_rate: int
    source: str  # file path, or "array"
    source_sample_rate: int
    source_channels: int

    @property
    def resampled(self) -> bool:
        return self.source_sample_rate != self.sample_rate

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def resample_fft(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of (N,) samples by zero-padding or truncating their spectrum.

    Truncating the spectrum is an ideal low-pass at the lower Nyquist frequency, so downsampling does not
    alias; the price is a little ringing at the clip's two ends (it treats the clip as periodic)."""
    if orig_sr == target_sr:
        return samples.astype(np.float32, copy=False)
    n_out = max(1, round(len(samples) * target_sr / orig_sr))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    n_bins = n_out // 2 + 1
    if n_bins <= len(spectrum):
        spectrum = spectrum[:n_bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(n_bins - len(spectrum), spectrum.dtype)])
    out = np.fft.irfft(spectrum, n_out) * (n_out / len(samples))  # keep the amplitude
    return out.astype(np.float32)


def _to_float(data: np.ndarray, source: str) -> np.ndarray:
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data / 2147483648.0).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    raise RuntimeInputError(f"{source}: samples of dtype {data.dtype}; expected float32/float64 in [-1, 1], "
                            f"int16 or int32")


def prepare_audio(data: np.ndarray, sample_rate: int, target_rate: int, source: str = "array") -> Audio:
    """(N,) or (N, channels) samples at `sample_rate` -> checked mono `Audio` at `target_rate`.

    Refuses empty audio and NaN or infinite samples (a model fed them returns garbage, not an error)."""
    data = np.asarray(data)
    if data.ndim not in (1, 2):
        raise RuntimeInputError(f"{source}: audio of shape {data.shape}; expected (samples,) or (samples, channels)")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise RuntimeInputError(f"{source}: sample rate {sample_rate!r}; expected a positive integer (Hz)")
    samples = _to_float(data, source)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    if samples.size == 0 or channels == 0:
        raise RuntimeInputError(f"{source}: empty audio (0 samples)")
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise RuntimeInputError(f"{source}: {int(bad.sum())} NaN or infinite samples (first at "
                                f"{first / sample_rate:.3f} s); expected finite samples in [-1, 1]")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples  # (N,)
    return Audio(resample_fft(mono, int(sample_rate), target_rate), target_rate, source, int(sample_rate), channels)


def read_audio(path: str | Path, target_rate: int) -> Audio:
    """Decode a WAV/FLAC/OGG/... file with soundfile and prepare it (see `prepare_audio`)."""
    path = Path(path)
    if not path.exists():
        raise RuntimeInputError(f"{path}: audio file not found")
    if not path.is_file():
        raise RuntimeInputError(f"{path}: not a file; expected an audio file (WAV, FLAC, OGG)")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = str(err).split("\n")[0]
        raise RuntimeInputError(f"{path}: unreadable audio ({reason}); expected a WAV, FLAC or OGG file") from None
    return prepare_audio(data, sample_rate, target_rate, str(path))
