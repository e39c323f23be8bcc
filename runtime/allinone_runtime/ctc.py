"""Greedy CTC decoding of per-frame best symbols (characters or subword pieces), with word start/end times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Word", "greedy_ids", "decode_greedy", "WORD_START"]

WORD_START = "\u2581"  # a subword piece that starts with it begins a new word (sentencepiece)


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float  # start of the frame that emitted the word's first symbol
    end_s: float  # end of the last frame of the word's last symbol (its repeats included)

    def to_dict(self) -> dict:
        return {"word": self.word, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


def greedy_ids(log_probs: np.ndarray) -> np.ndarray:
    """(T, V) log-probs -> (T,) best symbol per frame (ties go to the lower index, as torch.argmax)."""
    return np.asarray(log_probs).argmax(axis=-1)


def decode_greedy(ids: Sequence[int] | np.ndarray, vocab: Sequence[str], frame_shift_s: float,
                  blank_id: int = 0, space: str = " ") -> tuple[str, list[Word]]:
    """Collapse repeats, drop blanks; split words at `space` and before a subword piece that starts with
    "\u2581" (sentencepiece's word-start mark). Returns the text (words joined by one space, the same text
    `allinone`'s tokenizers give) and each word with its time span in the audio."""
    words: list[Word] = []
    chars: list[str] = []
    start = end = 0
    prev = None

    def close_word() -> None:
        nonlocal chars
        if chars:
            words.append(Word("".join(chars), start * frame_shift_s, end * frame_shift_s))
            chars = []

    for t, i in enumerate(map(int, ids)):
        if i == prev and i != blank_id and vocab[i] != space and chars:
            end = t + 1  # a repeated frame extends the symbol it repeats
        elif i != prev and i != blank_id:
            symbol = vocab[i]
            if len(symbol) > 2 and symbol[0] == "<" and symbol[-1] == ">":
                pass  # a special token (an imported model's <s>, <unk>...) prints nothing
            elif symbol == space:
                close_word()
            else:
                if symbol.startswith(WORD_START):
                    close_word()
                    symbol = symbol[len(WORD_START):]
                if symbol:
                    if not chars:
                        start = t
                    chars.append(symbol)
                    end = t + 1
        prev = i
    close_word()
    return " ".join(w.word for w in words), words
