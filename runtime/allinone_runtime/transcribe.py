"""Transcribe audio with a bundle: prepare the audio, run the program (in chunks when long), decode (greedily,
or by CTC prefix beam search with the bundle's LM and any hotwords when the bundle carries a decoder).

Long audio. One program call takes `max_samples` (30 s). Longer audio is cut into windows of `max_samples`
that start every `max_samples - overlap` samples, the overlap (4 s by default) rounded to whole output
frames so every window's frames fall on one global frame grid. Frame-level best symbols are merged before
decoding: the seam between two windows is the middle of their overlap, each window keeping its own frames
on its side, so every kept frame had at least overlap/2 of audio context on both sides. Repeats that meet
at a seam collapse like any other CTC repeat.

Short audio (under `min_samples`, 0.5 s) and a short last window are zero-padded to `min_samples`.
Audio whose peak is below `SILENCE_PEAK` (-60 dBFS) is silence: the text is empty and nothing runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone_runtime.audio import Audio, prepare_audio, read_audio
from allinone_runtime.bundle import Bundle
from allinone_runtime.ctc import Word, decode_greedy, greedy_ids
from allinone_runtime.decoder import bundle_decoder
from allinone_runtime.engine import Engine, set_threads
from allinone_runtime.errors import RuntimeInputError

__all__ = ["Transcriber", "Transcript", "SILENCE_PEAK", "DEFAULT_OVERLAP_S", "chunk_starts"]

SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: far below any speech, above digital silence and dither
DEFAULT_OVERLAP_S = 4.0


@dataclass
class Transcript:
    """The text of one input, its words with times, and how it was produced."""

    text: str
    words: list[Word]
    source: str
    audio_s: float
    source_sample_rate: int
    source_channels: int
    resampled: bool  # the input was not at the model's rate and was resampled to it
    silent: bool  # peak below SILENCE_PEAK: empty text, the model was not run
    chunks: int  # program calls (1 unless the audio is longer than the program's maximum)
    timings: dict = field(default_factory=dict)  # read_ms, inference_ms, decode_ms, total_ms, rtf

    def to_dict(self) -> dict:
        return {"source": self.source, "text": self.text, "words": [w.to_dict() for w in self.words],
                "audio_s": round(self.audio_s, 3), "source_sample_rate": self.source_sample_rate,
                "source_channels": self.source_channels, "resampled": self.resampled, "silent": self.silent,
                "chunks": self.chunks, "timings": {k: round(v, 3) for k, v in self.timings.items()}}


def chunk_starts(n_samples: int, max_samples: int, hop: int) -> list[int]:
    """Start sample of each window: one window if the audio fits, else every `hop` until the end is covered."""
    starts = [0]
    while starts[-1] + max_samples < n_samples:
        starts.append(starts[-1] + hop)
    return starts


class Transcriber:
    """Loads a bundle's program once; `transcribe` takes a file path or an array, returns a `Transcript`.

    `threads` sizes ExecuTorch's process-wide thread pool before the program loads; with several programs
    in one process, give them all the same count (see `engine.set_threads`).

    A bundle with a decoder block decodes by beam search with its LM (`greedy=True` forces greedy decoding);
    `decoder_overrides` replaces some of the manifest's decoder settings (beam, lm_weight, word_bonus,
    oov_penalty), `hotwords` (`beam.read_hotwords`) biases decoding toward phrases."""

    def __init__(self, bundle: Bundle | str | Path, *, threads: int | None = None,
                 overlap_s: float = DEFAULT_OVERLAP_S, greedy: bool = False, decoder_overrides: dict | None = None,
                 hotwords=()):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        b = self.bundle
        self.decoder = bundle_decoder(b, greedy=greedy, overrides=decoder_overrides, hotwords=hotwords)
        self.frame_samples = round(b.frame_shift_s * b.sample_rate)  # 640: audio per output frame
        overlap = int(round(overlap_s * b.sample_rate / self.frame_samples)) * self.frame_samples
        self.hop = (b.max_samples - overlap) // self.frame_samples * self.frame_samples
        if not 0 <= overlap < b.max_samples - b.min_samples:
            raise RuntimeInputError(f"overlap_s: expected 0 to {(b.max_samples - b.min_samples) / b.sample_rate:g} s, "
                                    f"got {overlap_s}")
        self.overlap = overlap
        set_threads(threads)
        self.engine = Engine(b.pte_path)
        self.load_ms = self.engine.load_ms

    def log_probs(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """(N,) samples at the model's rate -> ((T, V) log-probs on the global frame grid, program calls)."""
        b = self.bundle
        starts = chunk_starts(len(samples), b.max_samples, self.hop)
        kept = []
        for k, start in enumerate(starts):
            window = b.fit_input(samples[start:start + b.max_samples])  # padded, or cut to a length it takes
            out = self.engine.run(window)  # (T_k, V)
            first = 0 if k == 0 else self.overlap // 2 // self.frame_samples  # seam: middle of the overlap
            last = len(out) if k == len(starts) - 1 else (self.hop + self.overlap // 2) // self.frame_samples
            kept.append(out[first:last])
        return np.concatenate(kept, axis=0), len(starts)

    def transcribe(self, audio: str | Path | np.ndarray, sample_rate: int | None = None) -> Transcript:
        """Transcribe a file (any rate and channel count soundfile reads) or an array: (N,) or (N, channels)
        float in [-1, 1] or int16, at `sample_rate` (default: the model's rate)."""
        b = self.bundle
        start = time.perf_counter()
        if isinstance(audio, (str, Path)):
            prepared = read_audio(audio, b.sample_rate)
        else:
            prepared = prepare_audio(audio, b.sample_rate if sample_rate is None else sample_rate, b.sample_rate)
        read_ms = (time.perf_counter() - start) * 1e3
        return self._transcribe(prepared, read_ms)

    def _transcribe(self, audio: Audio, read_ms: float) -> Transcript:
        b = self.bundle
        silent = float(np.abs(audio.samples).max()) < SILENCE_PEAK
        start = time.perf_counter()
        if silent:
            text, words, chunks = "", [], 0
            inference_ms = decode_ms = 0.0
        else:
            log_probs, chunks = self.log_probs(audio.samples)
            inference_ms = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            if self.decoder is None:
                text, words = decode_greedy(greedy_ids(log_probs), b.vocab, b.frame_shift_s)
            else:
                text, spans = self.decoder.decode_words(log_probs)
                words = [Word(w, first * b.frame_shift_s, end * b.frame_shift_s) for w, first, end in spans]
            decode_ms = (time.perf_counter() - start) * 1e3
        total_ms = read_ms + inference_ms + decode_ms
        timings = {"read_ms": read_ms, "inference_ms": inference_ms, "decode_ms": decode_ms, "total_ms": total_ms,
                   "rtf": inference_ms / 1e3 / audio.duration_s}
        return Transcript(text, words, audio.source, audio.duration_s, audio.source_sample_rate,
                          audio.source_channels, audio.resampled, silent, chunks, timings)
