"""English ASR text normalisation: the one spelling every transcript, manifest and model output shares.

    normalize_text("Dr. Smith's 2nd car cost $3,500!")
    -> "dr smith's second car cost three thousand five hundred dollars"

Rules, in order: typographic quotes become ASCII; accents are stripped (café -> cafe); numbers are spelled
out (cardinals, ordinals 1st/2nd, decimals, $ amounts, percentages, and 4-digit years 1100-1999 and
2010-2099 the way they are said: 1984 -> nineteen eighty four); `&` becomes `and`; lowercase; every other
character that is not a letter becomes a space (so hyphens split words); apostrophes survive only
inside a word (`don't`, `alice's`, but not quoting `'tis` or `goin'`); whitespace collapses.
Letters outside a-z (e.g. Greek) are kept, so the tokenizer can name them instead of silently dropping them.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_text", "spell_number", "spell_ordinal", "spell_year", "expand_numbers"]

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}
# Letters NFKD does not decompose, spelled the way an English reader says them.
_LIGATURES = str.maketrans({"æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "ø": "o", "Ø": "O",
                            "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D"})
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201b": "'", "`": "'", "\u00b4": "'",
                         "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n < 20:
        words.append(_ONES[n])
    else:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    return words


def spell_number(n: int) -> str:
    """Cardinal in words, American style without 'and': 1205 -> 'one thousand two hundred five'."""
    if n < 0:
        return "minus " + spell_number(-n)
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += [spell_number(n // value), name]
            n %= value
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def spell_ordinal(n: int) -> str:
    """Ordinal in words: 21 -> 'twenty first', 100 -> 'one hundredth'."""
    words = spell_number(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def spell_year(n: int) -> str:
    """A year as said: 1984 -> 'nineteen eighty four', 1905 -> 'nineteen oh five', 1900 -> 'nineteen hundred'."""
    if n % 1000 < 10 or not 1000 <= n <= 9999:  # 2000, 2005, 1001: said as plain cardinals
        return spell_number(n)
    high, low = divmod(n, 100)
    if low == 0:
        return spell_number(high) + " hundred"
    if low < 10:
        return spell_number(high) + " oh " + spell_number(low)
    return spell_number(high) + " " + spell_number(low)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _money(m: re.Match) -> str:
    dollars = int(m.group(1).replace(",", ""))
    words = spell_number(dollars) + (" dollar" if dollars == 1 else " dollars")
    if m.group(2):
        cents = int(m.group(2))
        if cents:
            words += " and " + spell_number(cents) + (" cent" if cents == 1 else " cents")
    return f" {words} "


def _number(m: re.Match) -> str:
    whole, frac = m.group(1), m.group(2)
    if frac is not None:
        return f" {spell_number(int(whole.replace(',', '')))} point {_digits(frac)} "
    if "," not in whole and len(whole) == 4 and (1100 <= int(whole) <= 1999 or 2010 <= int(whole) <= 2099):
        return f" {spell_year(int(whole))} "
    return f" {spell_number(int(whole.replace(',', '')))} "


_MONEY = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d\d))?\b")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?")


def expand_numbers(text: str) -> str:
    """Spell out the numbers in `text`, leaving case and punctuation alone (also used to make TTS input)."""
    text = _MONEY.sub(_money, text)
    text = _ORDINAL.sub(lambda m: f" {spell_ordinal(int(m.group(1)))} ", text)
    text = _PERCENT.sub(lambda m: f"{m.group(1)} percent", text)
    text = _NUMBER.sub(_number, text)
    return re.sub(r"[ \t]+", " ", text).strip()


_HAS_DIGIT = re.compile(r"\d")
_NOT_LETTER_OR_APOSTROPHE = re.compile(r"[^\w']|[\d_]")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'+|'+(?!\w)")


def normalize_text(text: str) -> str:
    """Normalise an English transcript for character-level ASR (see the module docstring for the rules)."""
    if not text.isascii():
        text = text.translate(_QUOTES).translate(_LIGATURES)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("`", "'").replace("&", " and ")
    if _HAS_DIGIT.search(text):
        text = expand_numbers(text)
    text = _NOT_LETTER_OR_APOSTROPHE.sub(" ", text.lower())
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())
