"""Audio loading (decode, mix down, resample), the shipped sample clip, and augmentation, on real audio."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from allinone.data.audio import SAMPLE_RATE, audio_duration, load_audio, resample, write_wav_atomic
from allinone.data.augment import AugmentConfig, add_noise, add_reverb, augment_waveform, change_speed
from allinone.data.text import normalize_text
from allinone.data.tokenizer import CharTokenizer
from allinone.errors import BadInputError

SAMPLE = Path(str(resources.files("allinone") / "assets" / "sample.wav"))


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def test_sample_asset_is_16k_mono_pcm16_speech_with_a_normalised_transcript() -> None:
    info = sf.info(str(SAMPLE))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 2.5 < info.duration < 5.0 and SAMPLE.stat().st_size < 1_000_000
    wave = load_audio(SAMPLE)
    assert wave.dtype == np.float32 and np.abs(wave).max() > 0.1  # not silence
    text = (SAMPLE.parent / "sample.txt").read_text().strip()
    assert text == normalize_text(text) and CharTokenizer().encode(text)


def test_load_mixes_down_and_resamples_keeping_pitch(tmp_path: Path) -> None:
    sr = 44100
    t = np.arange(int(1.5 * sr)) / sr
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.flac"
    sf.write(str(path), np.stack([left, right], axis=1), sr)
    wave = load_audio(path)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 1.5 * SAMPLE_RATE) <= 2
    assert abs(_peak_hz(wave, SAMPLE_RATE) - 440) < 2
    assert abs(np.abs(wave[1000:-1000]).max() - 0.4) < 0.01  # the channel mean
    assert audio_duration(path) == pytest.approx(1.5)


def test_resample_identity_and_length() -> None:
    x = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    assert resample(x, 16000, 16000) is not None and np.array_equal(resample(x, 16000, 16000), x)
    assert len(resample(x, 22050, 16000)) == 16000


def test_missing_empty_and_unreadable_audio_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(BadInputError, match="empty audio"):
        load_audio(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(BadInputError, match="unreadable audio") as err:
        load_audio(junk)
    assert str(junk) in str(err.value)


def test_write_wav_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    write_wav_atomic(path, load_audio(SAMPLE))
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    assert sf.info(str(path)).subtype == "PCM_16"


def test_speed_perturbation_changes_duration_and_pitch() -> None:
    wave = load_audio(SAMPLE)
    fast = change_speed(wave, 1.1)
    assert abs(len(fast) - len(wave) / 1.1) < 5
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    assert abs(_peak_hz(change_speed(tone, 0.9), SAMPLE_RATE) - 450) < 3


def test_noise_hits_the_requested_snr() -> None:
    wave = load_audio(SAMPLE)
    noisy = add_noise(wave, np.random.default_rng(1), snr_db=10.0)
    noise = noisy - wave
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5


def test_reverb_keeps_length_and_smears_energy_later() -> None:
    click = np.zeros(SAMPLE_RATE, dtype=np.float32)
    click[100] = 1.0
    wet = add_reverb(click, np.random.default_rng(0), rt60=0.5)
    assert wet.shape == click.shape
    assert np.abs(wet[100 + SAMPLE_RATE // 10:]).max() > 1e-3  # a tail 100 ms after the click


def test_augment_is_reproducible_for_a_seed_and_varies_across_seeds() -> None:
    wave = load_audio(SAMPLE)
    cfg = AugmentConfig(speed_prob=1.0, reverb_prob=1.0, gain_prob=1.0, noise_prob=1.0)
    a = augment_waveform(wave, np.random.default_rng(7), cfg)
    b = augment_waveform(wave, np.random.default_rng(7), cfg)
    c = augment_waveform(wave, np.random.default_rng(8), cfg)
    assert np.array_equal(a, b)
    assert not (len(a) == len(c) and np.allclose(a, c))
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
    off = AugmentConfig(speed_prob=0, reverb_prob=0, gain_prob=0, noise_prob=0)
    assert np.array_equal(augment_waveform(wave, np.random.default_rng(0), off), wave)
