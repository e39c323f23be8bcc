"""Character tokenizer for CTC: index 0 = blank, then space, apostrophe, a-z (29 symbols).

The vocabulary travels with every checkpoint and bundle (`to_dict` / `from_dict`), so a model never
depends on the tokenizer code that trained it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from allinone.errors import BadInputError

__all__ = ["CharTokenizer", "BLANK", "DEFAULT_VOCAB", "TOKENIZER_FORMAT_VERSION", "is_special"]

TOKENIZER_FORMAT_VERSION = 1
BLANK = "<blank>"
DEFAULT_VOCAB: tuple[str, ...] = (BLANK, " ", "'", *string.ascii_lowercase)


def is_special(symbol: str) -> bool:
    """A special token `<...>` (the blank, or an imported model's <s>, </s>, <unk>): never spelled, prints nothing."""
    return len(symbol) > 2 and symbol.startswith("<") and symbol.endswith(">")


class CharTokenizer:
    """Maps normalised text (see `allinone.data.text.normalize_text`) to token ids and back."""

    blank_id = 0

    def __init__(self, vocab: Sequence[str] = DEFAULT_VOCAB):
        vocab = tuple(vocab)
        if not vocab or vocab[0] != BLANK:
            raise BadInputError(f"tokenizer vocabulary must start with the CTC blank {BLANK!r}, got {vocab[:1]}")
        if len(set(vocab)) != len(vocab):
            raise BadInputError("tokenizer vocabulary has duplicate symbols")
        if any(len(s) != 1 and not is_special(s) for s in vocab[1:]):
            raise BadInputError("tokenizer vocabulary symbols after the blank must be single characters "
                                "or special <...> tokens")
        self.vocab = vocab
        self._index = {s: i for i, s in enumerate(vocab) if i != 0 and not is_special(s)}
        # What each id prints: special tokens (an imported model's <s>, <unk>...) print nothing.
        self._text = tuple("" if is_special(s) else s for s in vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.vocab == other.vocab

    def __hash__(self) -> int:
        return hash(self.vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self.vocab)} symbols)"

    def unspellable(self, text: str) -> list[str]:
        """The distinct characters of `text` this vocabulary has no id for, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (already normalised). Raises BadInputError naming any unspellable characters."""
        try:
            return [self._index[c] for c in text]
        except KeyError:
            bad = ", ".join(repr(c) for c in self.unspellable(text))
            raise BadInputError(f"cannot spell {bad} in {text[:60]!r} (the vocabulary is blank, space, "
                                f"apostrophe and a-z; normalise the text first)") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a token id sequence; blanks are dropped, repeats are kept (see `decode_ctc`)."""
        return "".join(self._text[i] for i in map(int, ids) if i != 0)

    def decode_ctc(self, ids: Iterable[int]) -> str:
        """Greedy CTC decoding of per-frame argmax ids: collapse repeats, then drop blanks."""
        out, prev = [], None
        for i in map(int, ids):
            if i != prev and i != 0:
                out.append(self._text[i])
            prev = i
        return " ".join("".join(out).split())

    def to_dict(self) -> dict:
        """JSON-ready description, stored in checkpoints and bundle manifests."""
        return {"type": "char", "version": TOKENIZER_FORMAT_VERSION, "blank_id": 0, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("type") != "char":
            raise BadInputError(f"tokenizer: expected a dict with type 'char', got {d!r:.80}")
        if d.get("version") != TOKENIZER_FORMAT_VERSION:
            raise BadInputError(f"tokenizer: unsupported version {d.get('version')!r} "
                                f"(expected {TOKENIZER_FORMAT_VERSION})")
        if d.get("blank_id", 0) != 0 or not isinstance(d.get("vocab"), list):
            raise BadInputError("tokenizer: expected blank_id 0 and a 'vocab' list")
        return cls(d["vocab"])
