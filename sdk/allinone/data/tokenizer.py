"""CTC tokenizers: characters (index 0 = blank, then space, apostrophe, a-z: 29 symbols) or subword units
(index 0 = blank, then a sentencepiece BPE model's pieces, `▁` marking the start of a word).

The vocabulary travels with every checkpoint and bundle (`to_dict` / `tokenizer_from_dict`), so a model never
depends on the tokenizer code that trained it. A runtime decodes either kind from the piece list alone:
collapse repeats, drop the blank, join the pieces, and read `▁` (and " ") as a word boundary.
"""

from __future__ import annotations

import base64
import io
import string
from collections.abc import Iterable, Sequence

from allinone.errors import BadInputError

__all__ = ["CharTokenizer", "SentencePieceTokenizer", "Tokenizer", "train_sentencepiece", "tokenizer_from_dict",
           "BLANK", "DEFAULT_VOCAB", "TOKENIZER_FORMAT_VERSION", "WORD_START", "is_special"]

TOKENIZER_FORMAT_VERSION = 1
BLANK = "<blank>"
DEFAULT_VOCAB: tuple[str, ...] = (BLANK, " ", "'", *string.ascii_lowercase)
WORD_START = "\u2581"  # sentencepiece's "▁": a piece that starts with it begins a new word


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


class SentencePieceTokenizer:
    """Subword units for CTC: id 0 = blank, id k + 1 = piece k of a sentencepiece model (piece 0 is <unk>).

    Same interface as CharTokenizer. The model proto (a few kB) is kept in `to_dict`, so a checkpoint can
    encode new training text; decoding needs only the piece list.
    """

    blank_id = 0

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        if self._sp.unk_id() != 0 or self._sp.bos_id() >= 0 or self._sp.eos_id() >= 0:
            raise BadInputError("tokenizer: expected a sentencepiece model with <unk> at id 0 and no <s>/</s> "
                                "(train it with train_sentencepiece)")
        self.vocab = (BLANK, *(self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())))
        self._text = tuple("" if is_special(p) else p for p in self.vocab)
        self._chars = {c for p in self._text[1:] for c in p if c != WORD_START} | {" "}

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentencePieceTokenizer) and self.model_proto == other.model_proto

    def __hash__(self) -> int:
        return hash(self.model_proto)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({len(self.vocab)} symbols)"

    def unspellable(self, text: str) -> list[str]:
        return list(dict.fromkeys(c for c in text if c not in self._chars))

    def encode(self, text: str) -> list[int]:
        bad = self.unspellable(text)
        if bad:
            raise BadInputError(f"cannot spell {', '.join(repr(c) for c in bad)} in {text[:60]!r} (the subword "
                                "model was trained on lower-case letters, space and apostrophe; normalise the text)")
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return _join_pieces(self._text[i] for i in map(int, ids) if i != 0)

    def decode_ctc(self, ids: Iterable[int]) -> str:
        out, prev = [], None
        for i in map(int, ids):
            if i != prev and i != 0:
                out.append(self._text[i])
            prev = i
        return _join_pieces(out)

    def to_dict(self) -> dict:
        return {"type": "sentencepiece", "version": TOKENIZER_FORMAT_VERSION, "blank_id": 0, "vocab": list(self.vocab),
                "model": base64.b64encode(self.model_proto).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict) -> "SentencePieceTokenizer":
        if not isinstance(d, dict) or d.get("type") != "sentencepiece" or not isinstance(d.get("model"), str):
            raise BadInputError(f"tokenizer: expected a dict with type 'sentencepiece' and a 'model', got {d!r:.80}")
        if d.get("version") != TOKENIZER_FORMAT_VERSION:
            raise BadInputError(f"tokenizer: unsupported version {d.get('version')!r} "
                                f"(expected {TOKENIZER_FORMAT_VERSION})")
        try:
            proto = base64.b64decode(d["model"], validate=True)
        except ValueError:
            raise BadInputError("tokenizer: 'model' is not base64") from None
        tokenizer = cls(proto)
        if d.get("vocab") is not None and list(d["vocab"]) != list(tokenizer.vocab):
            raise BadInputError("tokenizer: 'vocab' does not match the pieces of its sentencepiece model")
        return tokenizer


def _join_pieces(pieces: Iterable[str]) -> str:
    return " ".join("".join(pieces).replace(WORD_START, " ").split())


def train_sentencepiece(texts: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
    """A BPE model of `vocab_size` pieces (blank excluded) trained on normalised `texts`.

    Deterministic for the same texts in the same order (one thread, no sampling); no text normalisation of
    its own (the texts are already normalised), and every character of the texts is covered.
    """
    import sentencepiece

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise BadInputError("train_sentencepiece: no text to learn subword units from")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=True,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=1, input_sentence_size=0,
            shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as err:
        raise BadInputError(f"train_sentencepiece: {str(err).splitlines()[0]}") from None
    return SentencePieceTokenizer(model.getvalue())


Tokenizer = CharTokenizer | SentencePieceTokenizer


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """The tokenizer a checkpoint or manifest describes (`type` 'char' or 'sentencepiece')."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "sentencepiece":
        return SentencePieceTokenizer.from_dict(d)
    return CharTokenizer.from_dict(d)
