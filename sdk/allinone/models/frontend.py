"""Waveform -> log-mel features, written with ops that torch.export and XNNPACK handle.

The short-time Fourier transform is a strided 1-D convolution with fixed windowed DFT kernels, so the whole
frontend (and its feature normalisation) lives inside the exported program and an app feeds raw samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FrontendConfig", "LogMelFrontend", "mel_filterbank", "num_frames"]


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 16000  # Hz; the .pte signature fixes 16 kHz input
    n_fft: int = 400  # 25 ms analysis window, the usual ASR setting
    hop_length: int = 160  # 10 ms frame shift
    n_mels: int = 80  # mel bands
    f_min: float = 0.0
    f_max: float = 8000.0  # Nyquist at 16 kHz
    log_floor: float = 1e-6  # added to mel power before log so silence stays finite

    def to_dict(self) -> dict:
        return asdict(self)


def num_frames(num_samples: torch.Tensor | int, cfg: FrontendConfig) -> torch.Tensor | int:
    """Frames the frontend makes from `num_samples` samples (no centre padding)."""
    return (num_samples - cfg.n_fft) // cfg.hop_length + 1


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)  # HTK mel scale


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters over the rfft bins."""
    n_bins = cfg.n_fft // 2 + 1
    bin_hz = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(cfg.f_min)), _hz_to_mel(np.array(cfg.f_max)), cfg.n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bin_hz[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def _dft_kernels(cfg: FrontendConfig) -> tuple[np.ndarray, np.ndarray]:
    """Two (n_bins, 1, n_fft) Hann-windowed kernels, cosine and sine: conv1d with them is a real DFT."""
    n_bins = cfg.n_fft // 2 + 1
    n = np.arange(cfg.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / cfg.n_fft)  # periodic Hann
    angle = 2 * math.pi * np.arange(n_bins)[:, None] * n[None, :] / cfg.n_fft
    return ((np.cos(angle) * window)[:, None, :].astype(np.float32),
            (-np.sin(angle) * window)[:, None, :].astype(np.float32))


class LogMelFrontend(nn.Module):
    """Waveform (B, N) at 16 kHz -> normalised log-mel (B, T, n_mels), T = (N - n_fft) // hop + 1.

    `feature_mean` / `feature_std` (per mel band) are set from training data before training starts and
    travel with the weights, so the exported program normalises its own input.
    """

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), persistent_constants: bool = False):
        super().__init__()
        self.cfg = cfg
        # Real and imaginary parts as two convolutions rather than one sliced in two: XNNPACK cannot
        # slice a tensor whose length is dynamic, and a slice outside the delegate splits the program.
        # They and the mel filters are derived from the config, so a supernet does not save them with its
        # weights: checkpoints stay small and float16 storage cannot round them. An extracted system keeps them
        # persistent, because ExecuTorch's lowering refuses non-persistent buffers.
        cos_kernels, sin_kernels = _dft_kernels(cfg)
        self.register_buffer("dft_cos", torch.from_numpy(cos_kernels), persistent=persistent_constants)
        self.register_buffer("dft_sin", torch.from_numpy(sin_kernels), persistent=persistent_constants)
        # Stored (n_mels, bins) so the mel projection is one F.linear, which XNNPACK runs; a matmul would
        # decompose into expand + reshape ops that it cannot take with a dynamic length.
        self.register_buffer("mel_fbank", torch.from_numpy(mel_filterbank(cfg).T.copy()), persistent=persistent_constants)
        self.register_buffer("feature_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feature_std", torch.ones(cfg.n_mels))

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, N) -> un-normalised log-mel (B, T, n_mels)."""
        samples = waveform.unsqueeze(1)  # (B, 1, N)
        real = F.conv1d(samples, self.dft_cos, stride=self.cfg.hop_length)  # (B, bins, T)
        imag = F.conv1d(samples, self.dft_sin, stride=self.cfg.hop_length)  # (B, bins, T)
        power = (real * real + imag * imag).transpose(1, 2)  # (B, T, bins)
        mel = F.linear(power, self.mel_fbank)  # (B, T, n_mels)
        return torch.log(mel + self.cfg.log_floor)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 -> (B, T, n_mels) normalised log-mel."""
        return (self.log_mel(waveform) - self.feature_mean) / self.feature_std
