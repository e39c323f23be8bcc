"""The decoder's flat byte trie (allinone_runtime/lexicon.py) against the plain definition: the set of the words'
byte prefixes. The C++ copy (runtime/cpp/src/lexicon.cpp) is checked through whole decodes in test_beam_cpp.py."""

from __future__ import annotations

import re
from pathlib import Path

from allinone_runtime.lexicon import Lexicon

ROOT = Path(__file__).resolve().parents[1]
# real words (this repo's README) plus multi-byte UTF-8 ones that share and split prefixes inside a character
WORDS = sorted(set(re.findall(r"[a-z']+", (ROOT / "README.md").read_text().lower())) | {
    "river", "café", "cafés", "cafè", "naïve", "über", "日本", "日本語", "日"})


def _prefixes(words: list[str]) -> set[bytes]:
    return {w.encode()[:n] for w in words for n in range(len(w.encode()) + 1)}


def test_the_trie_holds_exactly_the_words_and_their_prefixes():
    assert len(WORDS) > 300
    ids = {w.encode(): k for k, w in enumerate(WORDS, 3)}
    lexicon = Lexicon((w, k, 0.0) for k, w in enumerate(WORDS, 3))
    prefixes = _prefixes(WORDS)
    assert len(lexicon) == len(prefixes)  # one node per distinct prefix, the root included
    seen = set()
    for prefix in prefixes:
        node = lexicon.walk(0, prefix)
        assert node >= 0 and node not in seen, prefix
        seen.add(node)
        assert lexicon.word_at[node] == ids.get(prefix, -1), prefix
        # walking in two pieces reaches the same node as walking at once
        assert lexicon.walk(lexicon.walk(0, prefix[:1]), prefix[1:]) == node
        for byte in range(256):  # one byte more leaves the trie exactly when it is no longer a prefix
            assert (lexicon.walk(node, bytes([byte])) >= 0) == (prefix + bytes([byte]) in prefixes)
    assert lexicon.walk(-1, b"") == -1 and lexicon.walk(-1, b"a") == -1
    assert not lexicon.hot and not lexicon.hot_word


def test_hotwords_mark_their_paths_and_keep_lm_ids():
    entries = [(w, k, 0.0) for k, w in enumerate(WORDS, 3)]
    river = WORDS.index("river") + 3
    entries += [("river", river, 1.0), ("riverbank", 0, 2.0), ("rive", 0, 3.0)]
    lexicon = Lexicon(entries)
    for depth, prefix in enumerate([b"r", b"ri", b"riv", b"rive", b"river"], 1):
        node = lexicon.walk(0, prefix)
        assert lexicon.hot[node] == max(2.0 * depth, 3.0 * depth if depth <= 4 else 0.0)
    assert lexicon.hot[lexicon.walk(0, b"riverbank")] == 18.0
    assert lexicon.hot_word[lexicon.walk(0, b"river")] == 5.0
    assert lexicon.hot_word[lexicon.walk(0, b"riverbank")] == 18.0
    assert lexicon.hot_word[lexicon.walk(0, b"rive")] == 12.0
    assert lexicon.word_at[lexicon.walk(0, b"riverbank")] == 0  # not an LM word: scored as <unk>
    assert lexicon.word_at[lexicon.walk(0, b"river")] == river  # a hotword that is an LM word keeps its id
    assert lexicon.walk(0, b"the") >= 0 and lexicon.walk(0, b"the") not in lexicon.hot
