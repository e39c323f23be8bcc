"""CTC prefix beam search with a lexicon, a word n-gram LM and hotwords; pure Python + numpy.

The native runner (runtime/cpp/src/beam.cpp) implements the same algorithm step for step, with the same
double arithmetic in the same order, so both runtimes return the same transcript for the same log-probs.
One module, over 400 lines, because the search and its text state (trie walk, LM scoring, hotword
boosts) must stay in lock step with beam.cpp, which is easiest to check side by side in one file each.

Hypotheses are collapsed unit sequences (CTC prefixes) with a blank-ending and a non-blank-ending
log-probability (Graves 2012; Hannun et al. 2014). Units are the model's symbols: characters with " "
between words, or sentencepiece pieces whose "\u2581" starts a word. A word closes at " ", at the next
word-start piece, or at the end. Each hypothesis also carries a text state:

- the current partial word, walked through a byte trie of the lexicon (the LM's words plus the hotwords);
  a partial word that leaves the trie is out of vocabulary: `oov_penalty` is added once (at the step that
  left the trie, or at the close of a word that is only a prefix), or, with `oov_penalty=None`, the
  hypothesis is dropped (a strict lexicon);
- at each closed word: lm_weight * ln p(word | previous words) + word_bonus (an out-of-lexicon word is
  scored as <unk>); at the end, lm_weight * ln p(</s> | ...);
- hotwords: a partial word on the trie path of a hotword gets boost * (bytes walked) while it stays on it,
  and a closed hotword keeps boost * len(word bytes); a partial that turns off the path loses the bonus
  (it is a function of the trie node, never stored).

Per frame, only units within `token_prune` (ln) of the frame's best are extended; special units (<unk>,
<s>, ...) are never extended. Hypotheses are ranked by total score, ties broken by the unit sequence
(lexicographic), and the best `beam` kept.

Speed (the same result, computed in less Python). A prefix that is not in the beam can only be reached one
way in a frame (its parent plus one unit), so its score is one sum; those sums are computed for every
(hypothesis, unit) pair at once with numpy, in the same order of double operations as the step-by-step
rule. The text state that a unit would give a hypothesis (its score and trie node) is computed once per
prefix and kept while the prefix stays in the beam; a full `_State` is built only for the prefixes kept.
Prefixes already in the beam (which also gain their own blank and repeat paths) are updated one by one
in beam order, exactly as beam.cpp does, so the sums round alike.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from allinone_runtime.ctc import WORD_START
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.lexicon import Lexicon
from allinone_runtime.ngram import NgramLM

__all__ = ["DecoderOptions", "Hotword", "BeamDecoder", "read_hotwords", "parse_hotwords", "DEFAULT_HOTWORD_BOOST"]

NEG_INF = -math.inf
NODE_TABLES = 2048  # trie nodes whose unit tables are kept between frames and utterances (~0.8 MiB at 29 units)
DEFAULT_HOTWORD_BOOST = 1.5  # ln score per byte of a hotword; a 6-letter name gains 9 nats over a rival spelling
_SPECIAL, _SPACE, _WORD_START, _CONTINUE = 0, 1, 2, 3
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class DecoderOptions:
    """Beam-search settings; a bundle's manifest carries defaults (decoder block), transcribe can override."""

    # Defaults tuned on the v1 dev split with the shipped checkpoint's full system (docs/benchmarks.md)
    beam: int = 8  # hypotheses kept per frame (16 gained 0.7 WER points on dev for twice the time)
    lm_weight: float = 0.9  # weight of the LM's ln-probabilities against the acoustic ones
    word_bonus: float = 3.5  # ln score added per word (balances the LM's cost of each word)
    oov_penalty: float | None = -40.0  # ln score of a word outside the lexicon; None: such words are never output
    token_prune: float = 10.0  # units scoring this far (ln) below the frame's best are not extended

    def check(self, where: str = "decoder") -> "DecoderOptions":
        numbers = [self.lm_weight, self.word_bonus, self.token_prune] + ([] if self.oov_penalty is None
                                                                          else [self.oov_penalty])
        if not isinstance(self.beam, int) or isinstance(self.beam, bool) or not 1 <= self.beam <= 1024:
            raise RuntimeInputError(f"{where}: beam: expected an integer 1 to 1024, got {self.beam!r}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
            raise RuntimeInputError(f"{where}: expected finite numbers for lm_weight, word_bonus, oov_penalty, "
                                    f"token_prune")
        if self.token_prune <= 0:
            raise RuntimeInputError(f"{where}: token_prune: expected > 0, got {self.token_prune}")
        return self

    def to_dict(self) -> dict:
        return {"beam": self.beam, "lm_weight": self.lm_weight, "word_bonus": self.word_bonus,
                "oov_penalty": self.oov_penalty, "token_prune": self.token_prune}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "DecoderOptions":
        if not isinstance(d, dict):
            raise RuntimeInputError(f"{where}: expected an object of decoder settings")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise RuntimeInputError(f"{where}: unknown decoder setting {sorted(unknown)[0]!r}; expected "
                                    f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**d).check(where)


@dataclass(frozen=True)
class Hotword:
    phrase: str
    boost: float = DEFAULT_HOTWORD_BOOST


def parse_hotwords(text: str, where: str) -> list[Hotword]:
    """One phrase per line, optionally ending in ` :BOOST` (e.g. `ada lovelace :2.0`); `#` lines are comments."""
    hotwords = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        boost = DEFAULT_HOTWORD_BOOST
        head, sep, tail = line.rpartition(" :")
        if sep:
            try:
                boost = float(tail)
            except ValueError:
                raise RuntimeInputError(f"{where}:{n}: expected 'PHRASE' or 'PHRASE :BOOST', got {line!r}") from None
            if not math.isfinite(boost) or boost < 0:
                raise RuntimeInputError(f"{where}:{n}: boost: expected a number >= 0, got {tail!r}")
            line = head.strip()
        # ASCII lower-casing and ASCII blanks only, exactly as beam.cpp reads the same file
        phrase = " ".join(w for w in re.split(r"[ \t\r\n\f\v]+", line.translate(_ASCII_LOWER)) if w)
        if phrase:
            hotwords.append(Hotword(phrase, boost))
    return hotwords


def read_hotwords(path: str | Path) -> list[Hotword]:
    path = Path(path)
    try:
        return parse_hotwords(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise RuntimeInputError(f"{path}: no such hotwords file") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise RuntimeInputError(f"{path}: expected UTF-8 text, one phrase per line") from None


def _lse(a: float, b: float) -> float:
    """ln(e^a + e^b), written as in beam.cpp so both runtimes round alike."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a >= b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


class _State(NamedTuple):  # a named tuple: decoding builds thousands per second
    """Text state of a prefix: closed words, the partial word and its trie node (-1: left the lexicon)."""

    words: tuple[str, ...]
    partial: str
    node: int
    context: tuple[int, ...]  # LM context: the last order-1 word ids
    score: float  # lm_weight * LM + word_bonus * words + penalties + closed hotwords' bonuses
    spans: tuple[tuple[int, int], ...] = ()  # (first frame, end frame) of each closed word; never scored
    partial_span: tuple[int, int] = (0, 0)


class BeamDecoder:
    """Decodes (T, V) log-probs of one utterance; built once per (vocabulary, LM, options, hotwords)."""

    def __init__(self, vocab: Sequence[str], lm: NgramLM, options: DecoderOptions = DecoderOptions(),
                 hotwords: Sequence[Hotword] = ()):
        self.vocab = list(vocab)
        self.lm = lm
        self.options = options.check()
        self.kinds, self.texts = [], []
        for k, symbol in enumerate(self.vocab):
            if k == 0 or (len(symbol) > 2 and symbol[0] == "<" and symbol[-1] == ">"):
                self.kinds.append(_SPECIAL)
                self.texts.append("")
            elif symbol == " ":
                self.kinds.append(_SPACE)
                self.texts.append("")
            elif symbol.startswith(WORD_START):
                self.kinds.append(_WORD_START)
                self.texts.append(symbol[len(WORD_START):])
            else:
                self.kinds.append(_CONTINUE)
                self.texts.append(symbol)
        self.encoded = [t.encode("utf-8") for t in self.texts]  # what the byte trie walks
        pieces = {t for t in self.texts if t}
        unspellable = [w for w in lm.vocabulary if not _spellable(w, pieces)]
        if unspellable:
            raise RuntimeInputError(f"{lm.path}: {len(unspellable)} of {len(lm.vocabulary)} LM words cannot be "
                                    f"spelled with the model's units (e.g. {', '.join(map(repr, unspellable[:3]))}); "
                                    f"expected an LM built from text in the model's alphabet")
        hot_entries: list[tuple[str, int, float]] = []
        self.skipped_hotwords: list[tuple[str, str]] = []  # (phrase, characters the units cannot spell)
        alphabet = {c for p in pieces for c in p}
        for hw in hotwords:
            words = hw.phrase.split()
            unspellable = [w for w in words if not _spellable(w, pieces)]
            if unspellable:
                missing = "".join(dict.fromkeys(c for w in unspellable for c in w if c not in alphabet))
                self.skipped_hotwords.append((hw.phrase, missing or "(no spelling)"))
                continue
            hot_entries.extend((word, lm.word_id(word), hw.boost) for word in words)
        lm_entries = ((word, word_id, 0.0) for word_id, word in enumerate(lm.vocabulary, 3))
        self.lexicon = Lexicon(itertools.chain(lm_entries, hot_entries))
        # closing units (a space, a word-start piece) and what appending a word-start piece's text at the root costs
        self._closing = np.flatnonzero([k in (_SPACE, _WORD_START) for k in self.kinds])
        self._closing_penalty = self._closing_penalties()
        self._extendable = np.asarray([k != _SPECIAL for k in self.kinds])
        self._node_tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # trie node -> _node_table, as visited
        self._any_hot = any(self.lexicon.hot.values())
        self._no_bonus = np.zeros(len(self.vocab))
        self._lm_scores: dict[tuple[tuple[int, ...], int], float] = {}  # (context, word) -> LM score, per decode

    def _closing_penalties(self) -> np.ndarray:
        """Per closing unit: 0.0, or the OOV penalty (NaN: dropped) when its text leaves the trie from the root."""
        leave = math.nan if self.options.oov_penalty is None else self.options.oov_penalty
        return np.asarray([leave if k == _WORD_START and t and self.lexicon.walk(0, t) < 0 else 0.0
                           for k, t in zip(self.kinds, self.encoded) if k in (_SPACE, _WORD_START)])

    def _close(self, state: _State) -> _State | None:
        """Close the partial word; None if the lexicon is strict and the word is not in it."""
        if not state.partial:
            return state
        closed = self._closed_score(state)
        if closed is None:
            return None
        score, word_id = closed
        return _State(state.words + (state.partial,), "", 0, self.lm.next_context(state.context, word_id), score,
                      state.spans + (state.partial_span,))

    def _closed_score(self, state: _State) -> tuple[float, int] | None:
        """(score, LM word id) once the (non-empty) partial word is closed; None if the lexicon is strict and
        the word is not in it."""
        o = self.options
        score = state.score
        word_id = self.lexicon.word_at[state.node] if state.node >= 0 else -1
        if word_id < 0:
            if o.oov_penalty is None:
                return None
            if state.node >= 0:
                score += o.oov_penalty  # a prefix of lexicon words, but not a word: penalised now
            word_id = NgramLM.UNK
        else:
            score += self.lexicon.hot_word.get(state.node, 0.0)
        lm = self._lm_scores.get((state.context, word_id))
        if lm is None:
            lm = self._lm_scores[(state.context, word_id)] = self.lm.score(state.context, word_id)
        score += o.lm_weight * lm + o.word_bonus
        return score, word_id

    def _append(self, state: _State, unit: int, frame: int) -> _State | None:
        text = self.texts[unit]
        node = self.lexicon.walk(state.node, self.encoded[unit])
        score = state.score
        if node < 0 <= state.node:
            if self.options.oov_penalty is None:
                return None
            score += self.options.oov_penalty
        span = (state.partial_span[0] if state.partial else frame, frame + 1)
        return _State(state.words, state.partial + text, node, state.context, score, state.spans, span)

    def _advance(self, state: _State, unit: int, frame: int) -> _State | None:
        kind = self.kinds[unit]
        if kind == _SPACE:
            return self._close(state)
        if kind == _WORD_START:
            state = self._close(state)
            if state is None:
                return None
        return self._append(state, unit, frame) if self.texts[unit] else state

    def _unit_scores(self, state: _State) -> tuple[np.ndarray, np.ndarray]:
        """For every unit u: the score of `_advance(state, u)` (NaN where u is special or the state would be
        dropped) and the hotword bonus of its trie node; the same double operations as `_advance`."""
        penalty, bonus = self._node_table(state.node)
        scores = state.score + penalty  # units that continue the partial word (x + 0.0 == x)
        closed = self._closed_score(state) if state.partial else (state.score, -1)
        if closed is not None:  # a space or a word-start piece closes the word first
            scores[self._closing] = closed[0] + self._closing_penalty
        return scores, bonus

    def _node_table(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """Per unit, at trie `node` (-1: outside the lexicon): the penalty of appending it (0, oov_penalty
        when it leaves the trie, NaN when the lexicon is strict or the unit does not continue a word) and the
        hotword bonus of the node it leads to (closing units: from the root, as a word-start piece starts)."""
        table = self._node_tables.get(node)
        if table is None:
            o = self.options
            leave = NEG_INF if o.oov_penalty is None else o.oov_penalty
            penalty, bonus = np.full(len(self.vocab), math.nan), np.zeros(len(self.vocab))
            for u, (kind, text) in enumerate(zip(self.kinds, self.encoded)):
                if kind == _CONTINUE:
                    nxt = self.lexicon.walk(node, text) if node >= 0 else -1
                    penalty[u] = leave if nxt < 0 <= node else 0.0
                    bonus[u] = self.lexicon.hot.get(nxt, 0.0)
                elif kind == _WORD_START and text:
                    nxt = self.lexicon.walk(0, text)
                    bonus[u] = self.lexicon.hot.get(nxt, 0.0)
            penalty[penalty == NEG_INF] = math.nan  # strict lexicon: the state is dropped
            if not self._any_hot:
                bonus = self._no_bonus  # shared: without hotwords every bonus is 0
            if len(self._node_tables) >= NODE_TABLES:  # bounded memory: start over (a miss costs ~10 us)
                self._node_tables = {}
            table = self._node_tables[node] = (penalty, bonus)
        return table

    def _rank(self, total: float, state: _State) -> float:
        return total + state.score + self.lexicon.hot.get(state.node, 0.0)

    def _final(self, total: float, state: _State) -> float:
        closed = self._close(state)
        if closed is None:
            return NEG_INF
        return total + closed.score + self.options.lm_weight * self.lm.score(closed.context, NgramLM.EOS)

    def decode(self, log_probs: np.ndarray) -> str:
        """(T, V) log-probs of one utterance -> text (words joined by single spaces)."""
        return self.decode_words(log_probs)[0]

    def decode_words(self, log_probs: np.ndarray) -> tuple[str, list[tuple[str, int, int]]]:
        """(T, V) log-probs -> (text, [(word, first frame, end frame)]). A word's frames run from its first
        unit's emission to one past its last unit's first emission (repeats of it are not tracked)."""
        log_probs = np.asarray(log_probs, dtype=np.float32)
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.vocab):
            raise RuntimeInputError(f"decoder: expected (frames, {len(self.vocab)}) log-probs, got "
                                    f"{log_probs.shape}")
        o = self.options
        self._lm_scores = {}  # bounded by one utterance's words
        start = _State((), "", 0, (self.lm.BOS,) if self.lm.order > 1 else (), 0.0)
        # a hypothesis: (prefix, p_blank, p_nonblank, state, its _unit_scores or None until first needed)
        beam: list[tuple] = [((), 0.0, NEG_INF, start, None)]
        rows64 = log_probs.astype(np.float64)  # float32 -> double exactly, as beam.cpp does
        rows = rows64.tolist()
        # per frame, the units extended: within token_prune of the frame's best, never a special unit
        extended = (rows64 >= (rows64.max(axis=1) - o.token_prune)[:, None]) & self._extendable
        any_hot, width = self._any_hot, o.beam
        for frame, row in enumerate(rows):
            units = np.flatnonzero(extended[frame])
            unit_list = units.tolist()
            unit_set = set(unit_list)
            blank = row[0]
            # units that lead from a prefix in the beam to another prefix in the beam
            children: dict[tuple[int, ...], list[int]] = {}
            for hyp in beam:
                key = hyp[0]
                if key and key[-1] in unit_set:
                    children.setdefault(key[:-1], []).append(key[-1])
            # prefixes in the beam: their own blank and repeat paths and paths from a parent in the beam,
            # in beam order (the order of the sums decides their rounding)
            nxt: dict[tuple[int, ...], list] = {}
            totals, scores, bonuses = [], [], []
            fixes = []  # (hypothesis, unit position, source): repeats after a blank; -inf: prefixes in the beam
            for h, (key, pb, pnb, state, cached) in enumerate(beam):
                total = _lse(pb, pnb)
                totals.append(total)
                if cached is None:
                    cached = self._unit_scores(state)
                scores.append(cached[0])
                bonuses.append(cached[1])
                entry = nxt.get(key)
                if entry is None:
                    nxt[key] = entry = [total + blank, NEG_INF, state, cached]  # _lse(-inf, x) == x
                else:
                    entry[0] = _lse(entry[0], total + blank)
                last = key[-1] if key else -1
                if last in unit_set:
                    p = row[last]
                    entry[1] = _lse(entry[1], pnb + p)
                    fixes.append((h, unit_list.index(last), pb + p))  # a new symbol after a blank
                for u in children.get(key, ()):  # every other unit leads to a new prefix: scored below
                    fixes.append((h, unit_list.index(u), NEG_INF))
                    p = row[u]
                    source = pb + p if u == last else total + p
                    if source == NEG_INF:
                        continue
                    new_key = key + (u,)
                    target = nxt.get(new_key)
                    if target is None:
                        new_state = self._advance(state, u, frame)
                        if new_state is None:
                            continue
                        target = nxt[new_key] = [NEG_INF, NEG_INF, new_state, None]
                    target[1] = _lse(target[1], source)
            # new prefixes: one path each, source + score (+ hotword bonus) for every (hypothesis, unit)
            sources = np.asarray(totals)[:, None] + rows64[frame][units][None, :]  # (H, U)
            for h, j, source in fixes:
                sources[h, j] = source
            ranks = sources + np.stack(scores)[:, units]  # NaN: the state would be dropped
            if any_hot:  # the bonus is added last, as _rank does (without hotwords it is 0.0: nothing to add)
                ranks += np.stack(bonuses)[:, units]
            candidates = [(-self._rank(_lse(pb, pnb), st), key, pb, pnb, st, cached)
                          for key, (pb, pnb, st, cached) in nxt.items()]
            # only what can reach the top `beam` (ties included) is sorted: a new prefix ranked below the
            # beam-th prefix already in the beam cannot
            flat = ranks.ravel()
            bar = -sorted(c[0] for c in candidates)[width - 1] if len(candidates) >= width else NEG_INF
            if bar > NEG_INF:
                fresh = np.flatnonzero(flat >= bar)  # NaN (a dropped state) compares false
            else:
                fresh = np.flatnonzero(np.isfinite(flat))
            n_units = len(unit_list)
            for i in fresh.tolist():
                h, j = divmod(i, n_units)
                hyp = beam[h]
                # a new prefix: its state is built only if it is kept (None here; parent state and unit)
                candidates.append((-float(flat[i]), hyp[0] + (unit_list[j],), NEG_INF, float(sources[h, j]), None,
                                   (hyp[3], unit_list[j])))
            candidates.sort(key=lambda r: (r[0], r[1]))
            beam = []
            for _, key, pb, pnb, st, cached in candidates[:width]:
                if st is None:  # a new prefix kept: now its full state (words, spans) is built
                    st, cached = self._advance(cached[0], cached[1], frame), None
                beam.append((key, pb, pnb, st, cached))
        beam = [hyp[:4] for hyp in beam]
        final = sorted(((-self._final(_lse(pb, pnb), st), key, st) for key, pb, pnb, st in beam),
                       key=lambda r: (r[0], r[1]))
        if final[0][0] == math.inf:
            return "", []  # strict lexicon and no hypothesis ends in a word
        state = final[0][2]
        if state.partial:
            state = _State(state.words + (state.partial,), "", 0, (), 0.0, state.spans + (state.partial_span,))
        return " ".join(state.words), [(w, a, b) for w, (a, b) in zip(state.words, state.spans)]

    def with_options(self, options: DecoderOptions) -> "BeamDecoder":
        clone = object.__new__(BeamDecoder)
        clone.__dict__.update(self.__dict__)
        clone.options = options.check()
        clone._closing_penalty = clone._closing_penalties()  # these tables hold the OOV penalty
        clone._node_tables = {}
        return clone


def _spellable(word: str, pieces: set[str]) -> bool:
    """Can `word` be written as a concatenation of unit texts? (dynamic programming over its characters)"""
    reach = [True] + [False] * len(word)
    longest = max((len(p) for p in pieces), default=0)
    for i in range(len(word)):
        if reach[i]:
            for j in range(i + 1, min(len(word), i + longest) + 1):
                if not reach[j] and word[i:j] in pieces:
                    reach[j] = True
    return reach[len(word)]
