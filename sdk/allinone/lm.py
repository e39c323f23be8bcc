"""`allinone lm build`: a word n-gram language model for the beam-search decoder, estimated from text.

Estimator: interpolated modified Kneser-Ney (Chen & Goodman 1998, the estimator of KenLM's `lmplz` and
SRILM's `-kndiscount -interpolate`), written by hand: the `kenlm` package on PyPI queries models but does not
estimate them (`lmplz` is a separate C++ build with Boost), and the models here are small (thousands of
words), so estimation in Python takes seconds. The result is written as a standard ARPA file, so KenLM,
SRILM or any ARPA reader can check it.

- Sentences are lines of text (or the `text` of each JSONL manifest line), normalised as transcripts are
  (`normalize_text`), wrapped in `<s>` ... `</s>`.
- Adjusted counts: the highest order and n-grams starting with `<s>` keep raw counts; lower orders use
  continuation counts N1+(. w...), the number of distinct words seen before them.
- Three discounts per order from the counts-of-counts of adjusted counts (D1, D2, D3+); a degenerate order
  (too little text for n1..n4 to be non-zero) falls back to D = 0.5, 1.0, 1.5 capped below the count.
- p(w | h) = (a(hw) - D(a(hw))) / a(h.) + gamma(h) p(w | h'), gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.))
  / a(h.); unigrams interpolate with the uniform distribution over the vocabulary plus `<unk>`. Each
  written entry is that interpolated probability and gamma(h) is its back-off weight, as ARPA expects.
- Pruning to `max_bytes`: a count cutoff k on every order >= 2 (n-grams seen fewer than k times are dropped),
  raised from 1 until the ARPA text fits. The back-off weights are then recomputed for the model as written
  (lowest order first), so that it stays normalised: bow(h) = (1 - sum of the kept p(w | h)) / (1 - sum of the
  lower order's p(w | h') over the same words). One cutoff for every order keeps the ARPA closed under prefixes and
  suffixes (a kept n-gram's parts were seen at least as often).
- Rare words (`min_word_count` K > 1): words seen fewer than K times are replaced by `<unk>` before counting,
  so they leave the vocabulary (the decoder's lexicon) and `<unk>` is estimated like any word.

LM_DIR holds `lm.arpa` and `lm.json` (format version, order, counts, sha256 and bytes of the ARPA, the texts
it was estimated from); docs/formats.md describes both. The decoder's lexicon is the model's unigrams.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from allinone.errors import BadInputError
from allinone.files import sha256_file, write_files_atomically

__all__ = ["LmBuild", "build_lm", "read_sentences", "estimate_arpa", "DEFAULT_MAX_BYTES"]

UNK = "<unk>"
DEFAULT_MAX_BYTES = 16 * 2**20  # ARPA text budget; the v1 training text's trigram model is ~1.3 MB unpruned
_FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class LmBuild:
    """What `build_lm` wrote."""

    out: Path
    order: int
    counts: tuple[int, ...]  # n-grams per order in the ARPA
    words: int  # vocabulary size (without <s>, </s>, <unk>)
    sentences: int
    arpa_bytes: int
    min_count: int  # the count cutoff pruning settled on (1 = nothing pruned)


def read_sentences(path: str | Path) -> list[str]:
    """Normalised sentences of a text file (one per line) or a JSONL manifest (its `text` fields)."""
    from allinone.data.text import normalize_text

    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such text file") from None
    except (UnicodeDecodeError, IsADirectoryError) as err:
        raise BadInputError(f"{path}: expected UTF-8 text (one sentence per line, or a JSONL manifest): "
                            f"{err.__class__.__name__}") from None
    sentences = []
    jsonl = path.suffix == ".jsonl"
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise BadInputError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
            line = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(line, str):
                raise BadInputError(f"{path}:{n}: expected a JSON object with a 'text' field")
        text = normalize_text(line)
        if text:
            sentences.append(text)
    if not sentences:
        raise BadInputError(f"{path}: no usable words (expected lines of text, or a JSONL manifest with 'text')")
    return sentences


def _discounts(adjusted: dict[tuple, int]) -> tuple[float, float, float]:
    n = [0, 0, 0, 0, 0]
    for a in adjusted.values():
        if a <= 4:
            n[a] += 1
    if not all(n[1:5]):
        return _FALLBACK_DISCOUNTS
    y = n[1] / (n[1] + 2 * n[2])
    d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    return d if all(x > 0 for x in d) else _FALLBACK_DISCOUNTS


def _discount(d: tuple[float, float, float], a: int) -> float:
    return min(d[min(a, 3) - 1], a - 1e-3)  # never discount a count to zero or below


def estimate_arpa(sentences: Iterable[str], order: int, max_bytes: int = DEFAULT_MAX_BYTES,
                  min_word_count: int = 1) -> tuple[str, LmBuild]:
    """ARPA text of an interpolated modified Kneser-Ney model of `order`, pruned to `max_bytes`; words seen
    fewer than `min_word_count` times are counted as `<unk>` and left out of the vocabulary (the lexicon)."""
    if not 1 <= order <= 6:
        raise BadInputError(f"--order: expected 1 to 6, got {order}")
    if min_word_count < 1:
        raise BadInputError(f"--min-word-count: expected a count >= 1, got {min_word_count}")
    sentences = [s.split() for s in sentences]
    if min_word_count > 1:  # rare words (typos, names seen once) would be the lexicon's spelling traps
        seen = Counter(w for words in sentences for w in words)
        if max(seen.values(), default=0) < min_word_count:
            raise BadInputError(f"--min-word-count {min_word_count}: no word of the text is seen that often (the most "
                                f"frequent, {seen.most_common(1)[0][0] if seen else '-'!r}, {max(seen.values(), default=0)} "
                                f"times); expected a smaller K")
        sentences = [[w if seen[w] >= min_word_count else UNK for w in words] for words in sentences]
    raw: list[dict[tuple, int]] = [defaultdict(int) for _ in range(order + 1)]  # raw[n][ngram]
    n_sentences = 0
    for sentence in sentences:
        words = ["<s>"] + sentence + ["</s>"]
        n_sentences += 1
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                raw[n][tuple(words[i:i + n])] += 1
    if not n_sentences:
        raise BadInputError("lm: no sentences")
    # adjusted counts: continuation counts below the top order, except n-grams that start with <s>
    adjusted: list[dict[tuple, int]] = [{} for _ in range(order + 1)]
    adjusted[order] = dict(raw[order])
    for n in range(order - 1, 0, -1):
        continuation: dict[tuple, int] = defaultdict(int)
        for g in raw[n + 1]:
            continuation[g[1:]] += 1
        adjusted[n] = {g: (c if g[0] == "<s>" else continuation.get(g, 0)) for g, c in raw[n].items()}
        adjusted[n] = {g: a for g, a in adjusted[n].items() if a > 0}
    adjusted[1].pop(("<s>",), None)  # never predicted: log10 p = -99 in the ARPA, a context only
    discounts = [(0.0, 0.0, 0.0)] + [_discounts({g: a for g, a in adjusted[n].items() if a > 0})
                                     for n in range(1, order + 1)]
    vocab = sorted(w for (w,) in adjusted[1] if w not in ("<s>", "</s>", UNK))
    # history totals and the N1/N2/N3+ counts of what follows each history, per order
    prob: list[dict[tuple, float]] = [{} for _ in range(order + 1)]
    backoff: list[dict[tuple, float]] = [{} for _ in range(order + 1)]
    size = len(vocab) + 2  # vocabulary + </s> + <unk> share the uniform floor
    for n in range(1, order + 1):
        totals: dict[tuple, int] = defaultdict(int)
        follow: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
        for g, a in adjusted[n].items():
            if a <= 0:
                continue
            totals[g[:-1]] += a
            follow[g[:-1]][min(a, 3) - 1] += 1
        d = discounts[n]
        gamma = {h: (d[0] * f[0] + d[1] * f[1] + d[2] * f[2]) / totals[h] for h, f in follow.items()}
        for g, a in adjusted[n].items():
            h = g[:-1]
            if a <= 0:
                continue
            lower = 1.0 / size if n == 1 else _interpolated(prob, backoff, g[1:])
            prob[n][g] = (a - _discount(d, a)) / totals[h] + gamma[h] * lower
        for h, value in gamma.items():
            if n == 1:
                prob[0][()] = value  # mass of the uniform floor (<unk>'s probability when <unk> was never counted)
            else:
                backoff[n - 1][h] = value
    unk = prob[1].get((UNK,), prob[0][()] / size)  # counted when rare words became <unk>, else the floor's share
    # pruning: raise the count cutoff until the text fits
    for min_count in range(1, 1 << 20):
        kept = [None, (set(prob[1]) | {("<s>",)}) - {(UNK,)}] + [{g for g in prob[n] if raw[n][g] >= min_count} for n in range(2, order + 1)]
        # unpruned, the estimator's back-off weights are exact; pruned, they are recomputed for the model as written
        bow = [dict(b) for b in backoff] if min_count == 1 else _renormalised_backoffs(order, kept, prob, backoff, unk)
        text = _arpa_text(order, kept, prob, bow, unk)
        if len(text.encode()) <= max_bytes or order == 1:
            break
        if all(not kept[n] for n in range(2, order + 1)):
            break
    if len(text.encode()) > max_bytes:
        raise BadInputError(f"--max-bytes: the unigram model alone takes {len(text.encode()):,} bytes; expected a "
                            f"budget of at least that, or less text")
    counts = tuple(len(kept[n]) + (1 if n == 1 else 0) for n in range(1, order + 1))  # <unk> is a unigram too
    return text, LmBuild(Path(), order, counts, len(vocab), n_sentences, len(text.encode()), min_count)


def _renormalised_backoffs(order: int, kept: list, prob: list[dict[tuple, float]],
                           backoff: list[dict[tuple, float]], unk: float) -> list[dict[tuple, float]]:
    """Back-off weights that make the pruned model, as written, sum to 1 after every history h:
    bow(h) = (1 - sum of p(w | h) over the kept n-grams hw) / (1 - sum of p'(w | h[1:]) over the same w), with p'
    the written lower-order model (its own weights already recomputed: orders are done lowest first)."""
    bow: list[dict[tuple, float]] = [{} for _ in range(order + 1)]

    def written(context: tuple, w: str) -> float:
        if not context:
            return unk if w == UNK else prob[1][(w,)]
        g = context + (w,)
        if g in kept[len(g)]:
            return prob[len(g)][g]
        return bow[len(context)].get(context, 1.0) * written(context[1:], w)

    for n in range(2, order + 1):
        seen: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])  # history -> [kept mass, its lower mass]
        for g in kept[n]:
            seen[g[:-1]][0] += prob[n][g]
            seen[g[:-1]][1] += written(g[1:-1], g[-1])
        for h in backoff[n - 1]:
            if h in kept[n - 1] or h == (UNK,):  # only a written history can carry a weight (<unk> is written too)
                mass, lower = seen.get(h, (0.0, 0.0))
                bow[n - 1][h] = max(1.0 - mass, 0.0) / (1.0 - lower) if lower < 1.0 - 1e-12 else 1.0
    return bow


def _interpolated(prob: list[dict[tuple, float]], backoff: list[dict[tuple, float]], g: tuple) -> float:
    """p(g[-1] | g[:-1]) of the unpruned model (entries are already interpolated; unseen ones back off)."""
    n = len(g)
    if g in prob[n]:
        return prob[n][g]
    if n == 1:
        return prob[0][()] / (len(prob[1]) + 1)  # never reached for words of the text; kept for completeness
    return backoff[n - 1].get(g[:-1], 1.0) * _interpolated(prob, backoff, g[1:])


def _log10(p: float) -> str:
    return f"{math.log10(p):.6f}" if p > 0 else "-99"


def _arpa_text(order: int, kept: list, prob: list[dict[tuple, float]], bow: list[dict[tuple, float]],
               unk: float) -> str:
    lines = ["\\data\\"]
    unigrams = sorted(kept[1]) + [(UNK,)]
    sections = [unigrams] + [sorted(kept[n]) for n in range(2, order + 1)]
    for n, entries in enumerate(sections, 1):
        lines.append(f"ngram {n}={len(entries)}")
    for n, entries in enumerate(sections, 1):
        lines += ["", f"\\{n}-grams:"]
        for g in entries:
            p = unk if g == (UNK,) else (0.0 if g == ("<s>",) else prob[n][g])
            line = f"{_log10(p)}\t{' '.join(g)}"
            if n < order and g in bow[n]:
                # kept n-grams are the only contexts a query can reach at this order
                line += f"\t{_log10(bow[n][g])}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def build_lm(texts: Sequence[str | Path], order: int, out: str | Path, *,
             max_bytes: int = DEFAULT_MAX_BYTES, min_word_count: int = 1) -> LmBuild:
    """Estimate a word n-gram model from `texts` and write LM_DIR `out` (lm.arpa + lm.json), atomically per
    file with lm.json (which vouches for lm.arpa by sha256) renamed last. Verified by loading it back with
    the runtime's reader before returning."""
    from allinone import __version__
    from allinone_runtime.ngram import LM_FORMAT_VERSION, LM_KIND, load_lm

    if not texts:
        raise BadInputError("lm build: expected at least one --text FILE")
    sentences, sources = [], []
    for path in texts:
        read = read_sentences(path)
        sentences += read
        sources.append({"path": str(path), "sha256": sha256_file(Path(path)), "sentences": len(read)})
    text, info = estimate_arpa(sentences, order, max_bytes, min_word_count)
    arpa = text.encode("utf-8")
    import hashlib

    meta = {"format_version": LM_FORMAT_VERSION, "kind": LM_KIND, "order": order,
            "arpa": {"file": "lm.arpa", "sha256": hashlib.sha256(arpa).hexdigest(), "bytes": len(arpa)},
            "counts": list(info.counts), "words": info.words,
            "estimator": "interpolated modified Kneser-Ney",
            "pruning": {"max_bytes": max_bytes, "min_count": info.min_count, "min_word_count": min_word_count},
            "sentences": info.sentences, "texts": sources, "allinone_version": __version__}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory")
    write_files_atomically(out, [("lm.arpa", arpa), ("lm.json", (json.dumps(meta, indent=2) + "\n").encode())])
    load_lm(out)  # what was written reads back
    return LmBuild(out, order, info.counts, info.words, info.sentences, len(arpa), info.min_count)
