"""Read an LM directory (`lm.json` + `lm.arpa`, written by `allinone lm build`) and score words with it.

Every check fails with one line naming the file: lm.json missing, not JSON, of another kind or format
version; lm.arpa missing, of another size or sha256 than lm.json records (truncated, replaced); ARPA text
that does not parse (a foreign or damaged file). Scores are natural-log probabilities: ARPA's log10 values
times LN10, the same double arithmetic as the native runner's reader (runtime/cpp/src/ngram.cpp), so both
runtimes rank hypotheses identically.

In memory the model is a sorted-array trie, as in runtime/cpp/src/ngram.cpp: unigrams are indexed by word id;
an n-gram of order n >= 2 is the key `index of its (n-1)-word prefix * len(words) + last word id` in a sorted
array of its order, with its ln probability and back-off weight at the same position. That is 24 bytes per
n-gram (16 at the top order) where dicts of id tuples took about 80, and a lookup is one binary search per
order. ARPA files are closed under prefixes (every n-gram's first n-1 words are an n-gram of the model: KenLM
and SRILM write them so); a file that is not is refused.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone_runtime.errors import RuntimeInputError

__all__ = ["LM_FORMAT_VERSION", "LM_KIND", "LN10", "NgramLM", "load_lm", "check_lm_files", "parse_arpa"]

LM_FORMAT_VERSION = 1
LM_KIND = "allinone-lm"
LN10 = 2.302585092994046  # ln(10) as a double literal, written the same in ngram.cpp
MAX_LM_BYTES = 1 << 30
_BLANK = " \t\r\n\f\v"  # the whitespace C++'s trim() strips (str.strip() would also strip Unicode spaces)


@dataclass
class _Order:
    """The n-grams of one order >= 2, sorted by key (prefix index * vocabulary size + last word id)."""

    keys: array = field(default_factory=lambda: array("q"))
    prob: array = field(default_factory=lambda: array("d"))  # ln p
    backoff: array = field(default_factory=lambda: array("d"))  # ln back-off weight (0.0 where none is written);
    # empty at the top order, whose n-grams are never histories

    def find(self, key: int) -> int:
        j = bisect_left(self.keys, key)
        return j if j < len(self.keys) and self.keys[j] == key else -1


def _position(higher: list[_Order], size: int, gram: Sequence[int]) -> int:
    """Position of a non-empty n-gram (word ids) in its order's arrays (the word id for one word), or -1 if the
    model does not hold it; `size` is the number of words."""
    index = gram[0]
    for level, word in enumerate(gram[1:]):
        index = higher[level].find(index * size + word)
        if index < 0:
            return -1
    return index


@dataclass
class NgramLM:
    """A back-off word n-gram model. Word ids index `words`; id 0 is `<unk>`, 1 is `<s>`, 2 is `</s>`."""

    path: Path
    order: int
    words: list[str]
    ids: dict[str, int]
    unigram_prob: array  # ln p(word), indexed by word id
    unigram_backoff: array  # ln back-off weight of the one-word history, indexed by word id
    higher: list[_Order]  # orders 2..order

    UNK, BOS, EOS = 0, 1, 2

    @property
    def vocabulary(self) -> list[str]:
        """The words the LM knows (the decoder's lexicon): everything but <unk>, <s>, </s>."""
        return self.words[3:]

    def word_id(self, word: str) -> int:
        return self.ids.get(word, self.UNK)

    def score(self, context: tuple[int, ...], word: int) -> float:
        """ln p(word | context), backing off; `context` holds at most order-1 ids, oldest first."""
        total = 0.0
        # histories longer than order-1 words are never held (next_context keeps order-1), so they are skipped
        for start in range(max(0, len(context) - self.order + 1), len(context)):
            history = context[start:]
            h = _position(self.higher, len(self.words), history)
            if h < 0:  # an unseen history has no n-grams and no back-off weight (ln 1 = 0)
                continue
            level = self.higher[len(history) - 1]
            p = level.find(h * len(self.words) + word)
            if p >= 0:
                return total + level.prob[p]
            total += self.unigram_backoff[h] if len(history) == 1 else self.higher[len(history) - 2].backoff[h]
        return total + self.unigram_prob[word]

    def next_context(self, context: tuple[int, ...], word: int) -> tuple[int, ...]:
        keep = self.order - 1
        return (context + (word,))[-keep:] if keep else ()

    def ngrams(self, n: int) -> list[tuple[int, ...]]:
        """Every n-gram of order n the model holds, as word-id tuples (for tests and inspection)."""
        if n == 1:
            return [(w,) for w in range(len(self.words))]
        prefixes = self.ngrams(n - 1)
        size = len(self.words)
        return [prefixes[key // size] + (key % size,) for key in self.higher[n - 2].keys]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_lm_files(directory: str | Path) -> tuple[dict, Path, bytes]:
    """Read and check lm.json and the ARPA it names; returns (meta, arpa path, arpa bytes)."""
    directory = Path(directory)
    meta_path = directory / "lm.json"
    if not directory.is_dir():
        raise RuntimeInputError(f"{directory}: not an LM directory (expected lm.json + lm.arpa from `allinone lm build`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuntimeInputError(f"{meta_path}: missing; an LM directory is lm.json + lm.arpa") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RuntimeInputError(f"{meta_path}: not JSON ({err.__class__.__name__}); expected an allinone LM "
                                f"description") from None
    if not isinstance(meta, dict) or meta.get("kind") != LM_KIND:
        raise RuntimeInputError(f"{meta_path}: kind: expected {LM_KIND!r}; not an allinone LM description")
    if meta.get("format_version") != LM_FORMAT_VERSION:
        raise RuntimeInputError(f"{meta_path}: format_version: expected {LM_FORMAT_VERSION}, got "
                                f"{meta.get('format_version')!r}; this runtime reads LM format {LM_FORMAT_VERSION}")
    arpa_info = meta.get("arpa")
    order = meta.get("order")
    if (not isinstance(arpa_info, dict) or not isinstance(arpa_info.get("file"), str)
            or not isinstance(arpa_info.get("sha256"), str) or not isinstance(arpa_info.get("bytes"), int)
            or not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= 6):
        raise RuntimeInputError(f"{meta_path}: expected order (1-6) and arpa {{file, sha256, bytes}}")
    name = arpa_info["file"]
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise RuntimeInputError(f"{meta_path}: arpa.file: expected a file name inside the LM directory, got {name!r}")
    arpa_path = directory / name
    try:
        size = arpa_path.stat().st_size
    except FileNotFoundError:
        raise RuntimeInputError(f"{arpa_path}: missing; {meta_path.name} names it as the LM") from None
    if size != arpa_info["bytes"]:
        raise RuntimeInputError(f"{arpa_path}: {size:,} bytes, {meta_path.name} records {arpa_info['bytes']:,}; "
                                f"the file is truncated or was replaced (rebuild it with `allinone lm build`)")
    if size > MAX_LM_BYTES:
        raise RuntimeInputError(f"{arpa_path}: {size:,} bytes; expected at most {MAX_LM_BYTES:,}")
    data = arpa_path.read_bytes()
    if _sha256(data) != arpa_info["sha256"].lower():
        raise RuntimeInputError(f"{arpa_path}: sha256 differs from {meta_path.name}'s; the file is damaged or was "
                                f"replaced (rebuild it with `allinone lm build`)")
    return meta, arpa_path, data


class _Lines:
    """The lines of ARPA bytes one at a time (no list of every line: that would cost several times the file)."""

    def __init__(self, data: bytes, where: str):
        self.data, self.where, self.pos, self.number = data, where, 0, 0

    def _end(self) -> int:
        end = self.data.find(b"\n", self.pos)
        return len(self.data) if end < 0 else end

    def skip_blank(self) -> None:
        while self.pos < len(self.data):
            end = self._end()
            if self.data[self.pos:end].strip():
                return
            self.pos, self.number = end + 1, self.number + 1

    def next(self) -> str | None:
        """The next line without its newline, or None at the end of the data."""
        if self.pos >= len(self.data):
            return None
        end = self._end()
        raw, self.pos = self.data[self.pos:end], end + 1
        self.number += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RuntimeInputError(f"{self.where}: not UTF-8 text; expected an ARPA language model") from None

    def error(self, message: str) -> RuntimeInputError:
        return RuntimeInputError(f"{self.where}:{self.number}: {message}")


def _sorted_order(keys: array, prob: array, backoff: array, lines: _Lines, n: int) -> _Order:
    """Sort one order's n-grams by key; a repeated n-gram is refused."""
    keys_np = np.frombuffer(keys, dtype=np.int64)
    by_key = np.argsort(keys_np, kind="stable")
    sorted_keys = keys_np[by_key]
    if len(sorted_keys) > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise RuntimeInputError(f"{lines.where}: a {n}-gram is written twice; expected each n-gram once")
    level = _Order()
    level.keys.frombytes(sorted_keys.tobytes())
    level.prob.frombytes(np.frombuffer(prob, dtype=np.float64)[by_key].tobytes())
    if len(backoff):
        level.backoff.frombytes(np.frombuffer(backoff, dtype=np.float64)[by_key].tobytes())
    return level


def load_lm(directory: str | Path) -> NgramLM:
    """Check and load the LM in `directory`; RuntimeInputError with one line on any problem."""
    meta, arpa_path, data = check_lm_files(directory)
    return parse_arpa(data, str(arpa_path), meta["order"])


def parse_arpa(data: bytes, where: str, order: int) -> NgramLM:
    """Parse ARPA text; every n-gram's words must be unigrams of the model, and its prefix an n-gram of it."""
    lines = _Lines(data, where)
    lines.skip_blank()
    line = lines.next()
    if line is None or line.strip(_BLANK) != "\\data\\":
        raise RuntimeInputError(f"{where}: expected an ARPA language model starting with \\data\\")
    declared: list[int] = []
    while True:
        start = (lines.pos, lines.number)
        line = lines.next()
        if line is None or not line.startswith("ngram "):
            lines.pos, lines.number = start
            break
        try:
            n, count = line[6:].split("=")
            declared.append(int(count))
            if int(n) != len(declared) or declared[-1] < 0:
                raise ValueError
        except ValueError:
            raise lines.error("expected 'ngram N=COUNT'") from None
    if len(declared) != order:
        raise RuntimeInputError(f"{where}: {len(declared)} orders declared, lm.json says {order}")
    words = ["<unk>", "<s>", "</s>"]
    ids = {w: k for k, w in enumerate(words)}
    uni_prob: dict[int, float] = {}
    uni_backoff: dict[int, float] = {}
    higher: list[_Order] = []
    for n in range(1, order + 1):
        lines.skip_blank()
        line = lines.next()
        if line is None or line.strip(_BLANK) != f"\\{n}-grams:":
            raise lines.error(f"expected \\{n}-grams: (a truncated or damaged ARPA file)")
        keys, prob, backoff = array("q"), array("d"), array("d")
        for _ in range(declared[n - 1]):
            line = lines.next()
            fields = line.split("\t") if line is not None else []
            if len(fields) not in (2, 3) or len(fields[1].split(" ")) != n:
                raise lines.error(f"expected 'LOG10PROB<TAB>{n} words[<TAB>BACKOFF]' (a truncated or damaged "
                                  f"ARPA file)")
            try:
                p = float(fields[0]) * LN10
                b = float(fields[2]) * LN10 if len(fields) == 3 else 0.0
            except ValueError:
                raise lines.error(f"expected numbers, got {line[:60]!r}") from None
            gram = fields[1].split(" ")
            if n == 1:
                if gram[0] not in ids:
                    ids[gram[0]] = len(words)
                    words.append(gram[0])
                if ids[gram[0]] in uni_prob:
                    raise lines.error(f"the unigram {gram[0]!r} is written twice; expected each n-gram once")
                uni_prob[ids[gram[0]]] = p
                uni_backoff[ids[gram[0]]] = b
                continue
            try:
                gram_ids = [ids[w] for w in gram]
            except KeyError:
                raise lines.error("a word that is not a unigram of the model") from None
            prefix = _position(higher, len(words), gram_ids[:-1])
            if prefix < 0:
                raise lines.error(f"the {n}-gram's first {n - 1} words are not an n-gram of the model; "
                                  f"expected an ARPA file closed under prefixes")
            keys.append(prefix * len(words) + gram_ids[-1])
            prob.append(p)
            if n < order:  # the top order's n-grams are never histories: no back-off weight is read
                backoff.append(b)
        if n > 1:
            higher.append(_sorted_order(keys, prob, backoff, lines, n))
    lines.skip_blank()
    line = lines.next()
    if line is None or line.strip(_BLANK) != "\\end\\":
        raise RuntimeInputError(f"{where}: missing \\end\\ (a truncated or damaged ARPA file)")
    if ids["<unk>"] not in uni_prob:
        raise RuntimeInputError(f"{where}: no <unk> unigram; expected a model with an open vocabulary "
                                f"(as `allinone lm build` writes)")
    # a word without a unigram line (only <s> or </s> can be one) scores as <unk>, as a back-off to nothing would
    unk = uni_prob[ids["<unk>"]]
    unigram_prob = array("d", (uni_prob.get(w, unk) for w in range(len(words))))
    unigram_backoff = array("d", (uni_backoff.get(w, 0.0) for w in range(len(words))))
    return NgramLM(Path(where), order, words, ids, unigram_prob, unigram_backoff, higher)
