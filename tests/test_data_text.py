"""Text normalisation and the character tokenizer."""

from __future__ import annotations

import json

import pytest

from allinone.data.text import normalize_text, spell_number, spell_ordinal, spell_year
from allinone.data.tokenizer import DEFAULT_VOCAB, CharTokenizer
from allinone.errors import BadInputError


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("Don't stop; it's Alice's.", "don't stop it's alice's"),
    ("`and what is the use of a book,' thought Alice", "and what is the use of a book thought alice"),
    ("\u2018Tis goin\u2019 \u201cwell\u201d", "tis goin well"),
    ("a daisy-chain \u2014 twice", "a daisy chain twice"),
    ("Caf\u00e9 na\u00efve \u00c6sop stra\u00dfe", "cafe naive aesop strasse"),
    ("rock & roll", "rock and roll"),
    ("  lots   of\tspace \n", "lots of space"),
    ("He paid $3,500.25 for 2 cars.", "he paid three thousand five hundred dollars and twenty five cents for two cars"),
    ("the 21st and 12th of 100", "the twenty first and twelfth of one hundred"),
    ("pi is 3.14, 50% done", "pi is three point one four fifty percent done"),
    ("in 1984 and 1905, not 2000 or 2023",
     "in nineteen eighty four and nineteen oh five not two thousand or twenty twenty three"),
    ("1,000,000 people", "one million people"),
    ("", ""),
    ("?!...", ""),
])
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_keeps_letters_it_cannot_map_so_the_tokenizer_can_name_them() -> None:
    assert normalize_text("Greek \u03b1\u03b2\u03b3!") == "greek \u03b1\u03b2\u03b3"


def test_normalize_is_idempotent() -> None:
    text = normalize_text("It's 4:30 on May 3rd, 1999 \u2014 \u201cgo\u201d!")
    assert normalize_text(text) == text


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (99, "ninety nine"), (100, "one hundred"),
    (101, "one hundred one"), (1_000_001, "one million one"), (-7, "minus seven"),
    (123_456_789, "one hundred twenty three million four hundred fifty six thousand seven hundred eighty nine"),
])
def test_spell_number(n: int, words: str) -> None:
    assert spell_number(n) == words


def test_spell_ordinal_and_year() -> None:
    assert [spell_ordinal(n) for n in (1, 2, 3, 5, 9, 12, 20, 33, 100)] == [
        "first", "second", "third", "fifth", "ninth", "twelfth", "twentieth", "thirty third", "one hundredth"]
    assert spell_year(1776) == "seventeen seventy six"
    assert spell_year(1800) == "eighteen hundred"
    assert spell_year(2001) == "two thousand one"


def test_vocabulary_layout() -> None:
    tok = CharTokenizer()
    assert len(tok) == 29
    assert tok.vocab[0] == "<blank>" and tok.vocab[1] == " " and tok.vocab[2] == "'"
    assert "".join(tok.vocab[3:]) == "abcdefghijklmnopqrstuvwxyz"
    assert tok.blank_id == 0


def test_encode_decode_round_trip() -> None:
    tok = CharTokenizer()
    text = "don't panic it's only a zebra"
    ids = tok.encode(text)
    assert 0 not in ids and len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.encode("a b") == [3, 1, 4]


def test_encode_names_unspellable_characters() -> None:
    with pytest.raises(BadInputError) as err:
        CharTokenizer().encode("caf\u00e9 is 2 good")
    msg = str(err.value)
    assert "'\u00e9'" in msg and "'2'" in msg and "\n" not in msg


def test_decode_ctc_collapses_repeats_and_drops_blanks() -> None:
    tok = CharTokenizer()
    h, e, l, o, sp = (tok.encode(c)[0] for c in "helo ")
    frames = [0, h, h, 0, e, l, l, 0, l, o, o, sp, sp, 0]
    assert tok.decode_ctc(frames) == "hello"


def test_to_dict_from_dict_round_trip_through_json() -> None:
    tok = CharTokenizer()
    restored = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored == tok and restored.vocab == DEFAULT_VOCAB


@pytest.mark.parametrize("bad", [
    {"type": "bpe", "version": 1, "vocab": ["<blank>", "a"]},
    {"type": "char", "version": 99, "vocab": ["<blank>", "a"]},
    {"type": "char", "version": 1, "vocab": ["a", "<blank>"]},
    {"type": "char", "version": 1, "vocab": ["<blank>", "a", "a"]},
    {"type": "char", "version": 1},
    "char",
])
def test_from_dict_rejects_bad_descriptions(bad) -> None:
    with pytest.raises(BadInputError):
        CharTokenizer.from_dict(bad)
