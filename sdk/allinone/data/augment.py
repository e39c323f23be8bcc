"""Waveform augmentation: speed perturbation, simulated room reverberation, gain, additive noise at a random SNR,
and a narrow-band telephone channel.

Used by `allinone data synth --augment` (train split only) and, on the fly, by `SpeechDataset(augment=...)`.
Noise is synthesised (white/pink/brown) because no noise recordings ship with Debian; the reverberation is an
exponentially decaying noise impulse response with a random RT60, a standard cheap stand-in for a room.
All randomness comes from the `rng` argument, so a seed reproduces the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allinone.data.audio import SAMPLE_RATE, resample

__all__ = ["AugmentConfig", "TRAINING_AUGMENT", "augment_waveform", "add_noise", "add_reverb", "change_speed",
           "telephone"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probability and range of each effect; the defaults are the common Kaldi/ESPnet-style choices."""

    speed_prob: float = 0.5
    speeds: tuple[float, ...] = (0.9, 1.1)  # Kaldi's 3-way speed perturbation, less the identity
    reverb_prob: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.7)  # seconds: small room to large hall
    gain_prob: float = 0.5
    gain_db_range: tuple[float, float] = (-12.0, 3.0)
    noise_prob: float = 0.5
    snr_db_range: tuple[float, float] = (5.0, 30.0)
    telephone_prob: float = 0.0  # band-limit to 300-3400 Hz at 8 kHz with 8-bit mu-law, as a phone line would


# What `train` applies on the fly when a recipe sets `augment: true`: every effect, telephone channel included.
TRAINING_AUGMENT = AugmentConfig(telephone_prob=0.15)


def change_speed(waveform: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Play (N,) audio `factor` times faster (tempo and pitch together, as in Kaldi); returns (~N / factor,)."""
    return resample(waveform, round(sample_rate * factor), sample_rate)


def add_reverb(waveform: np.ndarray, rng: np.random.Generator, rt60: float,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Convolve (N,) audio with a synthetic room impulse response of reverberation time `rt60` seconds.

    Output is (N,), aligned with the input (the direct path stays at t=0) and peak-matched to it.
    """
    from scipy.signal import fftconvolve

    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir[0] = 1.0 + abs(rir[0])  # direct path
    wet = fftconvolve(waveform, rir)[: len(waveform)]
    peak_in, peak_out = np.abs(waveform).max(), np.abs(wet).max()
    return (wet * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def _colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS, shape (n,)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(waveform: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Add white, pink or brown noise to (N,) audio at `snr_db` dB signal-to-noise ratio; returns (N,)."""
    signal_rms = np.sqrt(np.mean(waveform.astype(np.float64) ** 2))
    if signal_rms == 0:
        return waveform
    noise = _colored_noise(rng, len(waveform), float(rng.choice([0.0, 1.0, 2.0])))
    return (waveform + noise * signal_rms / 10 ** (snr_db / 20)).astype(np.float32)


def telephone(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) audio through a narrow-band phone channel: 300-3400 Hz, 8 kHz, G.711-style 8-bit mu-law; returns (N,)."""
    from scipy.signal import butter, sosfilt

    narrow = resample(waveform, sample_rate, 8000)
    narrow = sosfilt(butter(4, (300, 3400), btype="bandpass", fs=8000, output="sos"), narrow)
    peak = max(float(np.abs(narrow).max()), 1e-6)
    mu = 255.0
    y = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)  # compand to [-1, 1]
    y = np.round(y * 127) / 127  # 8 bits
    narrow = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu * peak
    out = resample(narrow.astype(np.float32), 8000, sample_rate)
    return np.pad(out, (0, max(0, len(waveform) - len(out))))[: len(waveform)].astype(np.float32)


def augment_waveform(waveform: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig(),
                     sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply each effect of `config` with its probability, in the order speed, reverb, gain, noise, telephone
    (the last only drawn when its probability is set, so earlier configs give the same audio as before).

    Input (N,) float32; output (M,) float32 clipped to [-1, 1], M = N unless speed changed.
    """
    x = np.asarray(waveform, dtype=np.float32)
    if config.speeds and rng.random() < config.speed_prob:
        x = change_speed(x, float(rng.choice(config.speeds)), sample_rate)
    if rng.random() < config.reverb_prob:
        x = add_reverb(x, rng, float(rng.uniform(*config.rt60_range)), sample_rate)
    if rng.random() < config.gain_prob:
        x = x * np.float32(10 ** (rng.uniform(*config.gain_db_range) / 20))
    if rng.random() < config.noise_prob:
        x = add_noise(x, rng, float(rng.uniform(*config.snr_db_range)))
    if config.telephone_prob > 0 and rng.random() < config.telephone_prob:
        x = telephone(np.clip(x, -1.0, 1.0), sample_rate)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
