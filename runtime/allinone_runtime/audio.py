"""Audio in, for the runtime and the SDK alike: read a file or take an array, mix to mono, resample to the
model's rate with soxr, check it.

This is the one audio reader: `allinone.data.audio.load_audio` (evaluation, catalog, build verification) reads
through `read_audio`, so a file is heard the same at evaluation time and on the device. Files are decoded and
resampled in blocks (a streaming resampler), so memory stays near the 16 kHz output, even for an hour of audio.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from allinone_runtime.errors import RuntimeInputError

__all__ = ["Audio", "read_audio", "prepare_audio", "resample", "wav_truncation", "full_scale_warning"]

log = logging.getLogger(__name__)

BLOCK_S = 10  # seconds decoded per block: memory is the output plus one block, whatever the file's length
QUALITY = "HQ"  # soxr's default: band-limited (no aliasing when downsampling), linear phase


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


def _stream(orig_sr: int, target_sr: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality=QUALITY)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """(N,) samples at `orig_sr` -> float32 (M,) at `target_sr` with soxr; the file reader's resampler, in one
    block."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if orig_sr == target_sr:
        return samples
    return _stream(orig_sr, target_sr).resample_chunk(samples, last=True)


def _to_float(data: np.ndarray, source: str) -> np.ndarray:
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data / 2147483648.0).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    raise RuntimeInputError(f"{source}: samples of dtype {data.dtype}; expected float32/float64 in [-1, 1], "
                            f"int16 or int32")


def wav_truncation(path: str | Path) -> str | None:
    """What is missing when a WAV file's data chunk is shorter than its header says, else None.

    libsndfile reads such a file as a shorter one without a word, so a clip cut off in a copy would be
    transcribed as if it ended early. A data size of 0 or 0xFFFFFFFF (a stream written without knowing its
    length) promises nothing and passes; non-WAV files pass (their decoders report damage themselves)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        rate = frame_bytes = 0
        while len(chunk := f.read(8)) == 8:
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"data":
                if not frame_bytes or size in (0, 0xFFFFFFFF):
                    return None
                present = max(0, os.fstat(f.fileno()).st_size - f.tell())
                promised, held = size // frame_bytes, present // frame_bytes
                if held >= promised:
                    return None
                return (f"truncated WAV: the header promises {promised} frames ({promised / max(rate, 1):.2f} s), "
                        f"the file holds {held} ({held / max(rate, 1):.2f} s)")
            body = f.read(min(size, 16)) if name == b"fmt " else b""
            if len(body) >= 14:
                rate, frame_bytes = int.from_bytes(body[4:8], "little"), int.from_bytes(body[12:14], "little")
            f.seek(size + size % 2 - len(body), os.SEEK_CUR)  # chunks are padded to even sizes
    return None


def full_scale_warning(samples: np.ndarray, source: str) -> str | None:
    """A warning naming the peak when float samples go beyond full scale ([-1, 1]), else None.

    Integer formats cannot; float files can hold anything, and a model trained on [-1, 1] hears 1000x full
    scale as noise (it is transcribed as given, not clipped)."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak <= 1.0:
        return None
    return f"{source}: peak {peak:.4g} ({20 * np.log10(peak):+.1f} dBFS) is beyond full scale; expected samples in [-1, 1]"


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
    warning = full_scale_warning(samples, source)
    if warning:
        log.warning(warning)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples  # (N,)
    return Audio(resample(mono, int(sample_rate), target_rate), target_rate, source, int(sample_rate), channels)


def read_audio(path: str | Path, target_rate: int) -> Audio:
    """Decode a WAV/FLAC/OGG/... file with soundfile, block by block, and prepare it as `prepare_audio` does:
    mono, at `target_rate`, refused when missing, unreadable, empty, truncated or holding NaN/infinite samples;
    samples beyond full scale are a warning."""
    path = Path(path)
    if not path.exists():
        raise RuntimeInputError(f"{path}: audio file not found")
    if not path.is_file():
        raise RuntimeInputError(f"{path}: not a file; expected an audio file (WAV, FLAC, OGG)")
    parts, peak, n_bad, first_bad, frames = [], 0.0, 0, None, 0
    try:
        truncated = wav_truncation(path)
        with sf.SoundFile(str(path)) as f:
            rate, channels, promised = f.samplerate, f.channels, f.frames
            stream = _stream(rate, target_rate) if rate != target_rate else None
            for block in f.blocks(blocksize=BLOCK_S * rate, dtype="float32", always_2d=True):  # (n, C)
                bad = ~np.isfinite(block)
                if bad.any():
                    n_bad += int(bad.sum())
                    first_bad = frames + int(np.argwhere(bad)[0][0]) if first_bad is None else first_bad
                elif block.size:
                    peak = max(peak, float(np.abs(block).max()))
                frames += len(block)
                mono = block.mean(axis=1) if channels > 1 else block[:, 0]  # (n,)
                parts.append(stream.resample_chunk(mono) if stream is not None else mono.copy())
            if stream is not None:
                parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = str(err).split("\n")[0]
        raise RuntimeInputError(f"{path}: unreadable audio ({reason}); expected a WAV, FLAC or OGG file") from None
    if truncated:
        raise RuntimeInputError(f"{path}: {truncated}; expected a complete audio file")
    if frames == 0:
        raise RuntimeInputError(f"{path}: empty audio (0 samples)")
    if frames < promised:  # a damaged file that decodes short: never transcribe it as if it ended early
        raise RuntimeInputError(f"{path}: truncated: the header promises {promised} frames, decoding gave {frames}; "
                                f"expected a complete audio file")
    if n_bad:
        raise RuntimeInputError(f"{path}: {n_bad} NaN or infinite samples (first at {first_bad / rate:.3f} s); "
                                f"expected finite samples in [-1, 1]")
    warning = full_scale_warning(np.array([peak]), str(path))
    if warning:
        log.warning(warning)
    return Audio(np.concatenate(parts).astype(np.float32, copy=False), target_rate, str(path), rate, channels)
