"""The exportable log-mel frontend against an independent numpy reference, on real speech."""

import importlib.resources

import numpy as np
import soundfile as sf
import torch

from allinone.models.frontend import FrontendConfig, LogMelFrontend, num_frames


def _speech() -> np.ndarray:
    path = importlib.resources.files("allinone") / "assets" / "sample.wav"
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and len(audio) > 16000
    return audio


def _reference_log_mel(audio: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """np.fft-based log-mel with a filterbank built bin by bin (independent of the module's code)."""
    n_frames = (len(audio) - cfg.n_fft) // cfg.hop_length + 1
    window = np.hanning(cfg.n_fft + 1)[:-1]  # periodic Hann
    frames = np.stack([audio[i * cfg.hop_length: i * cfg.hop_length + cfg.n_fft] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames.astype(np.float64) * window, axis=1)) ** 2  # (T, bins)
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
    edges = [700.0 * (10 ** (m / 2595.0) - 1) for m in np.linspace(mel(cfg.f_min), mel(cfg.f_max), cfg.n_mels + 2)]
    freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    fbank = np.zeros((len(freqs), cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo <= f <= mid:
                fbank[k, m] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                fbank[k, m] = (hi - f) / (hi - mid)
    return np.log(power @ fbank + cfg.log_floor)


def test_log_mel_matches_numpy_reference_on_speech():
    audio, cfg = _speech(), FrontendConfig()
    ours = LogMelFrontend(cfg).log_mel(torch.from_numpy(audio)[None])[0].numpy()
    ref = _reference_log_mel(audio, cfg)
    assert ours.shape == ref.shape == (num_frames(len(audio), cfg), cfg.n_mels)
    # 1e-3 relative to the reference's dynamic range; float32 DFT vs float64 FFT.
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-3, rel
    # Speech has structure: the features are not flat.
    assert ref.std(axis=0).mean() > 1.0


def test_normalisation_statistics_apply():
    audio = torch.from_numpy(_speech())[None]
    frontend = LogMelFrontend()
    raw = frontend.log_mel(audio)
    frontend.feature_mean.copy_(raw.mean(dim=(0, 1)))
    frontend.feature_std.copy_(raw.std(dim=(0, 1)))
    normalised = frontend(audio)
    assert torch.allclose(normalised.mean(dim=(0, 1)), torch.zeros(80), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 1)), torch.ones(80), atol=1e-3)
