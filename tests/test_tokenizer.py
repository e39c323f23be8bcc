"""Output units: characters and sentencepiece subwords, decoded alike by the SDK and the device runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from allinone.data._sources import load_sentences
from allinone.data.tokenizer import (CharTokenizer, SentencePieceTokenizer, WORD_START, tokenizer_from_dict,
                                     train_sentencepiece)
from allinone.errors import BadInputError
from allinone_runtime.ctc import decode_greedy


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [s.text for s in load_sentences(corpus_version=1)[:5000]]


@pytest.fixture(scope="module")
def pieces(texts) -> SentencePieceTokenizer:
    return train_sentencepiece(texts, 200)


def test_subword_model_is_deterministic_and_round_trips(texts, pieces):
    assert train_sentencepiece(texts, 200) == pieces  # same text, same pieces
    assert len(pieces) == 201 and pieces.vocab[0] == "<blank>" and pieces.vocab[1] == "<unk>"
    for text in texts[:300]:
        ids = pieces.encode(text)
        assert 0 not in ids and 1 not in ids  # no blank, no unknown piece
        assert pieces.decode(ids) == text
    # whole words become single pieces; the word-start mark says where words begin
    assert any(p.startswith(WORD_START) and len(p) > 3 for p in pieces.vocab)


def test_subword_ctc_decoding_collapses_repeats_and_blanks(pieces):
    ids = pieces.encode("and the light was good")
    frames = [0]
    for i in ids:
        frames += [i, i, 0]
    assert pieces.decode_ctc(frames) == "and the light was good"
    doubled = pieces.encode("good")[-1]
    assert pieces.decode_ctc([doubled, 0, doubled]) == pieces.decode([doubled, doubled])


def test_to_dict_from_dict_and_bad_descriptions(pieces):
    data = json.loads(json.dumps(pieces.to_dict()))
    assert data["type"] == "sentencepiece" and data["vocab"] == list(pieces.vocab)
    assert tokenizer_from_dict(data) == pieces
    assert tokenizer_from_dict(CharTokenizer().to_dict()) == CharTokenizer()
    with pytest.raises(BadInputError, match="does not match"):
        tokenizer_from_dict({**data, "vocab": data["vocab"][:-1]})
    with pytest.raises(BadInputError, match="base64"):
        tokenizer_from_dict({**data, "model": "%%%"})
    with pytest.raises(BadInputError, match="cannot spell"):
        pieces.encode("caf\u00e9")
    with pytest.raises(BadInputError, match="no text"):
        train_sentencepiece(["", " "], 50)


@pytest.mark.parametrize("kind", ["char", "subword"])
def test_runtime_decoder_gives_the_sdk_text_with_word_times(kind, pieces):
    """The device runtime decodes from the piece list alone; it must agree with the SDK on any frame sequence."""
    tokenizer = CharTokenizer() if kind == "char" else pieces
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames = rng.integers(0, len(tokenizer), size=int(rng.integers(1, 40)))
        frames[rng.random(len(frames)) < 0.4] = 0  # blanks, as CTC emits them
        text, words = decode_greedy(frames, tokenizer.vocab, frame_shift_s=0.08)
        assert text == tokenizer.decode_ctc(frames)
        assert [w.word for w in words] == text.split()
        assert all(0 <= w.start_s < w.end_s for w in words)
