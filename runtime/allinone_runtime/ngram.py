"""Read an LM directory (`lm.json` + `lm.arpa`, written by `allinone lm build`) and score words with it.

Every check fails with one line naming the file: lm.json missing, not JSON, of another kind or format
version; lm.arpa missing, of another size or sha256 than lm.json records (truncated, replaced); ARPA text
that does not parse (a foreign or damaged file). Scores are natural-log probabilities: ARPA's log10 values
times LN10, the same double arithmetic as the native runner's reader (runtime/cpp/src/ngram.cpp), so both
runtimes rank hypotheses identically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from allinone_runtime.errors import RuntimeInputError

__all__ = ["LM_FORMAT_VERSION", "LM_KIND", "LN10", "NgramLM", "load_lm", "check_lm_files"]

LM_FORMAT_VERSION = 1
LM_KIND = "allinone-lm"
LN10 = 2.302585092994046  # ln(10) as a double literal, written the same in ngram.cpp
MAX_LM_BYTES = 1 << 30


@dataclass
class NgramLM:
    """A back-off word n-gram model. Word ids index `words`; id 0 is `<unk>`, 1 is `<s>`, 2 is `</s>`."""

    path: Path
    order: int
    words: list[str]
    ids: dict[str, int]
    prob: dict[tuple[int, ...], float]  # n-gram -> ln p
    backoff: dict[tuple[int, ...], float]  # context -> ln back-off weight
    arpa_bytes: int
    arpa_sha256: str

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
        for start in range(len(context) + 1):
            history = context[start:]
            p = self.prob.get(history + (word,))
            if p is not None:
                return total + p
            total += self.backoff.get(history, 0.0)
        return total + self.prob[(self.UNK,)]  # unreachable: every id has a unigram

    def next_context(self, context: tuple[int, ...], word: int) -> tuple[int, ...]:
        keep = self.order - 1
        return (context + (word,))[-keep:] if keep else ()


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


def parse_arpa(data: bytes, where: str, order: int) -> NgramLM:
    """Parse ARPA text; every n-gram's words must be unigrams of the model."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise RuntimeInputError(f"{where}: not UTF-8 text; expected an ARPA language model") from None
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\data\\":
        raise RuntimeInputError(f"{where}: expected an ARPA language model starting with \\data\\")
    i += 1
    declared: list[int] = []
    while i < len(lines) and lines[i].startswith("ngram "):
        try:
            n, count = lines[i][6:].split("=")
            declared.append(int(count))
            if int(n) != len(declared):
                raise ValueError
        except ValueError:
            raise RuntimeInputError(f"{where}:{i + 1}: expected 'ngram N=COUNT'") from None
        i += 1
    if len(declared) != order:
        raise RuntimeInputError(f"{where}: {len(declared)} orders declared, lm.json says {order}")
    words = ["<unk>", "<s>", "</s>"]
    ids = {w: k for k, w in enumerate(words)}
    prob: dict[tuple[int, ...], float] = {}
    backoff: dict[tuple[int, ...], float] = {}
    for n in range(1, order + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines) or lines[i].strip() != f"\\{n}-grams:":
            raise RuntimeInputError(f"{where}:{i + 1}: expected \\{n}-grams: (a truncated or damaged ARPA file)")
        i += 1
        for _ in range(declared[n - 1]):
            fields = lines[i].split("\t") if i < len(lines) else []
            if len(fields) not in (2, 3) or len(fields[1].split(" ")) != n:
                raise RuntimeInputError(f"{where}:{i + 1}: expected 'LOG10PROB<TAB>{n} words[<TAB>BACKOFF]' "
                                        f"(a truncated or damaged ARPA file)")
            try:
                p = float(fields[0])
                b = float(fields[2]) if len(fields) == 3 else None
            except ValueError:
                raise RuntimeInputError(f"{where}:{i + 1}: expected numbers, got {lines[i][:60]!r}") from None
            gram = fields[1].split(" ")
            if n == 1:
                if gram[0] not in ids:
                    ids[gram[0]] = len(words)
                    words.append(gram[0])
                key = (ids[gram[0]],)
            else:
                try:
                    key = tuple(ids[w] for w in gram)
                except KeyError:
                    raise RuntimeInputError(f"{where}:{i + 1}: a word that is not a unigram of the model") from None
            prob[key] = p * LN10
            if b is not None:
                backoff[key] = b * LN10
            i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\end\\":
        raise RuntimeInputError(f"{where}: missing \\end\\ (a truncated or damaged ARPA file)")
    if (ids["<unk>"],) not in prob:
        raise RuntimeInputError(f"{where}: no <unk> unigram; expected a model with an open vocabulary "
                                f"(as `allinone lm build` writes)")
    return NgramLM(Path(where), order, words, ids, prob, backoff, len(data), _sha256(data))


def load_lm(directory: str | Path) -> NgramLM:
    """Check and load the LM in `directory`; RuntimeInputError with one line on any problem."""
    meta, arpa_path, data = check_lm_files(directory)
    return parse_arpa(data, str(arpa_path), meta["order"])
