"""The beam-search decoder's lexicon: a byte trie of the LM's words and the hotwords, in flat arrays.

Nodes are numbered breadth first from the root (0), so a node's children are consecutive and sorted by the
byte that leads to them: one step is a binary search among them. Per node that is a first child (4 bytes), a
child count (2), the byte leading to it (1) and a word id (4); a dict of children per node cost 490-640
bytes per word. Hotword bonuses exist only on hotword paths, so they are kept in small dicts.
runtime/cpp/src/lexicon.cpp builds the same arrays.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["Lexicon"]


class Lexicon:
    """Built once from (word, LM word id, hotword boost) entries; boost 0 for a plain LM word."""

    def __init__(self, entries: Iterable[tuple[str, int, float]]):
        by_bytes: dict[bytes, int] = {}
        hot_entries: list[tuple[bytes, float]] = []
        for word, word_id, boost in entries:
            data = word.encode("utf-8")
            by_bytes[data] = word_id  # a hotword that is also an LM word has the same id
            if boost:
                hot_entries.append((data, boost))
        words = sorted(by_bytes)
        ids = array("i", (by_bytes[w] for w in words))
        del by_bytes
        self.first = array("i", [0])  # first child's node
        self.count = array("H", [0])  # number of children (at most 256)
        self.label = array("B", [0])  # the byte leading to the node (the root's is unused)
        self.word_at = array("i", [-1])  # LM word id of the word ending here; -1: none
        # Breadth first: depth d's nodes are the distinct d-byte prefixes, met in sorted order (prefixes of
        # sorted words are sorted), so the children of each node are made one after another, sorted by byte.
        at = array("i", bytes(4 * len(words)))  # per word: the node of its prefix so far (the root)
        alive = [k for k, w in enumerate(words) if w]
        depth = 0
        while alive:
            longer, last = [], (-1, -1)
            for k in alive:
                w = words[k]
                parent, byte = at[k], w[depth]
                if (parent, byte) != last:
                    last = (parent, byte)
                    node = len(self.label)
                    if not self.count[parent]:
                        self.first[parent] = node
                    self.count[parent] += 1
                    self.first.append(0)
                    self.count.append(0)
                    self.label.append(byte)
                    self.word_at.append(-1)
                at[k] = node
                if len(w) == depth + 1:
                    self.word_at[node] = ids[k]
                else:
                    longer.append(k)
            alive, depth = longer, depth + 1
        # hotwords: boost * bytes walked on each node of the path, boost * length at the word's end (the best)
        self.hot: dict[int, float] = {}
        self.hot_word: dict[int, float] = {}
        for data, boost in hot_entries:
            node = 0
            for depth, byte in enumerate(data, 1):
                node = self._child(node, byte)
                self.hot[node] = max(self.hot.get(node, 0.0), boost * depth)
            self.hot_word[node] = max(self.hot_word.get(node, 0.0), boost * len(data))

    def __len__(self) -> int:
        """Number of nodes, the root included."""
        return len(self.label)

    def _child(self, node: int, byte: int) -> int:
        lo = self.first[node]
        hi = lo + self.count[node]
        i = bisect_left(self.label, byte, lo, hi)
        return i if i < hi and self.label[i] == byte else -1

    def walk(self, node: int, data: bytes) -> int:
        """The node reached from `node` by the UTF-8 bytes `data`; -1 once it leaves the trie (or from -1)."""
        first, count, label = self.first, self.count, self.label  # the decoder's inner loop: _child inlined
        for byte in data:
            if node < 0:
                return -1
            lo = first[node]
            hi = lo + count[node]
            node = bisect_left(label, byte, lo, hi)
            if node == hi or label[node] != byte:
                return -1
        return node
