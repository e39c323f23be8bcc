"""English sentences for the synthetic corpus, from public-domain or freely licensed text in Debian packages.

Each source yields raw sentences; `speakable` keeps only those a TTS engine will say exactly as written
(no acronyms, abbreviations, roman numerals or symbols it might read its own way) and returns the text to
feed the engine (numbers already spelled out) and the transcript (its normalised form), so audio and
label always agree. Licences are in docs/data.md.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from allinone.data.text import expand_numbers, normalize_text

__all__ = ["Sentence", "load_sentences", "speakable", "SOURCE_PACKAGES", "SOURCE_PACKAGES_V2"]

# Debian package -> the source name used in manifests and docs/data.md.
SOURCE_PACKAGES = {"bible-kjv": "kjv", "fortunes": "fortunes", "fortunes-min": "fortunes",
                   "wordnet-base": "wordnet", "flite": "flite-examples", "dict-gcide": "gcide"}
SOURCE_PACKAGES_V2 = {"wordnet-base": "wordnet-glosses", "dict-gcide": "gcide"}  # format 2's additions

_FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Fortune files that are mostly not prose (pictures, code, shell hints) or not English.
_FORTUNE_SKIP = {"art", "ascii-art", "perl", "linux", "linuxcookie", "debian", "computers", "translate-me",
                 "zippy", "knghtbrd"}
_WORDNET_DIR = Path("/usr/share/wordnet")
_FLITE_EXAMPLES = Path("/usr/share/doc/flite/examples")
_GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
# Definitions of slurs and crude words are not material to teach a recogniser with; the dictionaries mark them.
_MARKED_OFFENSIVE = re.compile(r"\b(?:offensive|slur|derogatory|disparaging|vulgar|obscene|contemptuous)\b",
                               re.IGNORECASE)

MIN_WORDS, MAX_WORDS, MAX_CHARS = 4, 24, 160


@dataclass(frozen=True)
class Sentence:
    """`speak` is what the engine reads; `text` is the transcript (normalised `speak`)."""

    source: str
    speak: str
    text: str


_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()$%&-]+$")
_SHORT_CAPS = re.compile(r"\b[A-Z]{2,3}\b")  # acronyms: engines spell some, read others
_ROMAN = re.compile(r"\b[IVXLCDM]{2,}\b")
_MIXED = re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])(?!\d+(?:st|nd|rd|th)\b)\w+\b")  # MP3, 4x4 (not 21st)
_INNER_PERIOD = re.compile(r"\.(?=.)")  # abbreviations and initials survive sentence splitting
_ABBREV = re.compile(r"\b(?:etc|vs|viz|ie|eg|mr|mrs|ms|dr|st|jr|sr|mt|ft|oz|lb|no|vol|ch)\b", re.IGNORECASE)
_LONG_CAPS = re.compile(r"\b[A-Z]{4,}\b")


def speakable(raw: str) -> tuple[str, str] | None:
    """(text for the engine, transcript) if `raw` is a clean sentence the engines will read verbatim, else None."""
    s = " ".join(raw.replace("`", "'").replace("\u2019", "'").replace("--", ", ").split())
    s = s.strip(" \"'()").lstrip(",;:-. ")
    if not s or not _ALLOWED.match(s) or _INNER_PERIOD.search(s) or _ABBREV.search(s):
        return None
    if _SHORT_CAPS.search(s) or _ROMAN.search(s) or _MIXED.search(s):
        return None
    s = _LONG_CAPS.sub(lambda m: m.group(0).capitalize(), s)  # shouting (and KJV's LORD) read as words
    speak = expand_numbers(s) if any(c.isdigit() for c in s) else s
    text = normalize_text(speak)
    n_words = len(text.split())
    if not MIN_WORDS <= n_words <= MAX_WORDS or len(text) > MAX_CHARS:
        return None
    if not speak.endswith(("?", "!", ".")):
        speak = speak.rstrip(",;:") + "."
    return speak, text


_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')]*\s+(?=[\"'(]*[A-Z])")


def _split(text: str) -> list[str]:
    return _SENTENCE_END.split(" ".join(text.split()))


def _kjv() -> Iterator[str]:
    if shutil.which("bible") is None:
        return
    # -l10000: one verse per line ("  1 In the beginning ..."), chapters headed by "Genesis 1".
    out = subprocess.run(["bible", "-l10000", "Gen1:1-Rev22:21"], capture_output=True, text=True,
                         timeout=120).stdout
    for chapter in re.split(r"\n(?=\S)", out):
        verses = " ".join(m.group(1) for m in re.finditer(r"^\s+\d+ (.*)$", chapter, re.MULTILINE))
        # Sentences run across verses and are long; their clauses (split at ; and :) are natural utterances.
        yield from re.split(r"(?<=[.;:?!])\s+", verses)


def _fortunes() -> Iterator[str]:
    if not _FORTUNE_DIR.is_dir():
        return
    for path in sorted(_FORTUNE_DIR.iterdir()):
        if path.suffix or path.name in _FORTUNE_SKIP or not path.with_name(path.name + ".dat").exists():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in text.split("\n%\n"):
            # Drop attribution lines ("-- Mark Twain") and indented verse/code blocks.
            lines = [ln for ln in cookie.splitlines() if not re.match(r"^\s*(--|\u2014)", ln)]
            yield from _split(" ".join(lines))


def _wordnet() -> Iterator[str]:
    for part in ("noun", "verb", "adj", "adv"):
        path = _WORDNET_DIR / f"data.{part}"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # licence header lines start with spaces
                    continue
                for example in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                    yield from _split(example)


def _flite_examples() -> Iterator[str]:
    for name in ("alice", "alice.gz", "intro.txt", "intro.txt.gz"):
        path = _FLITE_EXAMPLES / name
        if path.is_file():
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            # Alice's chapter headings are all caps; drop them before joining lines.
            body = "\n".join(ln for ln in raw.decode("utf-8", "replace").splitlines() if not ln.isupper())
            yield from _split(body)


def _clean_fragment(text: str) -> bool:
    """A definition fragment left whole by the clean-up: balanced brackets, no gap where a reference was
    removed ("which resembles ."), no free-standing dash an engine may read as "minus"."""
    return text.count("(") == text.count(")") and not re.search(r"\s[.,;:)]|\s-\s|\(\s", text)


def _wordnet_glosses() -> Iterator[str]:
    """WordNet's definitions ("a large natural stream of water"), one clause per `;`-separated part."""
    for part in ("noun", "verb", "adj", "adv"):
        path = _WORDNET_DIR / f"data.{part}"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                gloss = line.split(" | ", 1)[1]
                if _MARKED_OFFENSIVE.search(gloss):
                    continue
                for clause in gloss.split(";"):
                    if '"' not in clause and _clean_fragment(clause.strip()):  # quoted examples: `wordnet`
                        yield clause.strip()


def _gcide() -> Iterator[str]:
    """The definitions of the GNU Collaborative International Dictionary of English (1913 Webster + additions).

    Each entry is a headword line and indented definition lines; bracketed etymology and source tags, field
    labels like `(Anat.)` and `--Author.` citations are removed, then the prose is split into sentences.
    """
    if not _GCIDE.is_file():
        return
    text = gzip.decompress(_GCIDE.read_bytes()).decode("utf-8", errors="replace")
    for entry in text.split("\n\n"):
        lines = entry.splitlines()
        body = " ".join(ln.strip() for ln in lines[1:] if ln.startswith("   "))
        if not body or _MARKED_OFFENSIVE.search(body):
            continue
        body = re.sub(r"\[[^\]]*\]|\{[^}]*\}|--\s*[A-Z][\w. ]*?\.(?=\s|$)|\((?:[A-Z][a-z]*\.\s*)+\)", " ", body)
        body = re.sub(r"(?:^|\s)\d+\.\s", " ", body)  # sense numbers
        for sentence in _split(body):
            yield from (c.strip() for c in sentence.split(";") if _clean_fragment(c.strip()))


_SOURCES = {"kjv": _kjv, "fortunes": _fortunes, "wordnet": _wordnet, "flite-examples": _flite_examples}
# Corpus format 2 adds WordNet's definitions and GCIDE's, about 5x the sentences of format 1.
_SOURCES_V2 = {**_SOURCES, "wordnet-glosses": _wordnet_glosses, "gcide": _gcide}


def load_sentences(corpus_version: int = 2) -> list[Sentence]:
    """Every distinct speakable sentence from the installed sources of a corpus format, in a fixed order.

    A transcript that two sources share is kept once (from the first source), so no sentence can end up
    in two splits through a duplicate. Format 2's sources come after format 1's, so every format-1 sentence
    keeps its source.
    """
    seen: set[str] = set()
    out: list[Sentence] = []
    for source, read in (_SOURCES if corpus_version == 1 else _SOURCES_V2).items():
        for raw in read():
            spoken = speakable(raw)
            if spoken and source not in _SOURCES and not _clean_fragment(spoken[0]):
                continue  # format 2's definition fragments, checked again once numbers are spelled out
            if spoken and spoken[1] not in seen:
                seen.add(spoken[1])
                out.append(Sentence(source, *spoken))
    return out
