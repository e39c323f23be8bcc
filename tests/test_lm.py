"""Word n-gram LM (`allinone lm build`) and the Python beam-search decoder on real speech (issue 15)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from allinone.errors import BadInputError
from allinone.lm import build_lm, estimate_arpa
from allinone_runtime.beam import BeamDecoder, DecoderOptions, parse_hotwords
from allinone_runtime.ctc import decode_greedy, greedy_ids
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.ngram import load_lm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk/allinone/assets/sample.wav"
CHECKPOINT = ROOT / "checkpoints/conformer_small"
TEXT = """the quick brown fox jumps over the lazy dog
the dog sleeps near the river bank
a brown dog jumps over the fox
near the river the lazy fox sleeps
the quick dog runs over the bank
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "allinone.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    text = tmp_path_factory.mktemp("text") / "sentences.txt"
    text.write_text(TEXT)
    return build_lm([text], 3, tmp_path_factory.mktemp("lm") / "lm").out


@pytest.fixture(scope="module")
def sample_log_probs() -> tuple[np.ndarray, list[str]]:
    """The shipped checkpoint's full system on the packaged clip: (T, V) log-probs and the vocabulary."""
    import torch

    from allinone.checkpoint import load_checkpoint
    from allinone.data.audio import load_audio

    ckpt = load_checkpoint(CHECKPOINT)
    ckpt.model.eval()
    wave = torch.from_numpy(load_audio(SAMPLE))[None]
    with torch.no_grad():
        log_probs, _ = ckpt.model(wave, None, ckpt.targets[0])
    return log_probs[0].float().numpy(), list(ckpt.tokenizer().vocab)


def test_lm_is_normalised_and_reads_back(lm_dir):
    lm = load_lm(lm_dir)
    meta = json.loads((lm_dir / "lm.json").read_text())
    assert meta["order"] == 3 and meta["estimator"] == "interpolated modified Kneser-Ney"
    assert sorted(lm.vocabulary) == sorted(set(TEXT.split()))
    the, dog = lm.word_id("the"), lm.word_id("dog")
    for context in [(), (lm.BOS,), (lm.BOS, the), (the, dog), (dog, lm.UNK)]:
        total = sum(math.exp(lm.score(context, w)) for w in range(len(lm.words)) if w != lm.BOS)
        assert total == pytest.approx(1.0, abs=1e-4), context
    # seen continuations beat unseen ones
    assert lm.score((lm.BOS, the), lm.word_id("quick")) > lm.score((lm.BOS, the), lm.word_id("river"))


def _assert_normalised(arpa: str, order: int) -> None:
    """Every history the model can be asked about (<s> and each written n-gram below the top order) sums to 1."""
    from allinone_runtime.ngram import parse_arpa

    lm = parse_arpa(arpa.encode(), "lm.arpa", order)
    written = [g for n in range(1, order) for g in lm.ngrams(n)]
    histories = {(lm.BOS,)} | {g for g in written if lm.BOS not in g[1:]}
    for context in sorted(histories):
        total = sum(math.exp(lm.score(context, w)) for w in range(len(lm.words)) if w != lm.BOS)
        assert total == pytest.approx(1.0, abs=1e-4), [lm.words[i] for i in context]


@pytest.mark.parametrize("min_word_count", [1, 2])
def test_pruning_fits_the_budget_and_keeps_the_model_normalised(min_word_count):
    sentences = TEXT.splitlines() * 3 + ["one two three four five six seven", "eight nine ten eleven twelve"]
    full, info = estimate_arpa(sentences, 3, min_word_count=min_word_count)
    pruned, small = estimate_arpa(sentences, 3, max_bytes=len(full.encode()) * 2 // 3, min_word_count=min_word_count)
    assert info.min_count == 1 and small.min_count > 1
    assert len(pruned.encode()) <= len(full.encode()) * 2 // 3 and small.counts[2] < info.counts[2]
    assert small.counts[0] == info.counts[0]  # unigrams are never pruned: the lexicon stays whole
    _assert_normalised(full, 3)
    _assert_normalised(pruned, 3)  # the dropped n-grams' mass is given back through the back-off weights


def test_rare_words_leave_the_lexicon_and_count_as_unk(lm_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    rare = build_lm([text], 3, tmp_path / "lm", min_word_count=2)
    lm, whole = load_lm(rare.out), load_lm(lm_dir)
    counts = {w: TEXT.split().count(w) for w in set(TEXT.split())}
    assert sorted(lm.vocabulary) == sorted(w for w, c in counts.items() if c >= 2) and "runs" not in lm.vocabulary
    assert rare.words == len(lm.vocabulary) and json.loads((rare.out / "lm.json").read_text())["pruning"][
        "min_word_count"] == 2
    dog = lm.word_id("dog")
    for context in [(), (lm.BOS,), (dog,), (dog, lm.UNK)]:
        total = sum(math.exp(lm.score(context, w)) for w in range(len(lm.words)) if w != lm.BOS)
        assert total == pytest.approx(1.0, abs=1e-4), context
    # "dog runs" was seen: <unk> after "dog" is now an observed bigram, not the uniform floor's share
    assert lm.score((lm.BOS, dog), lm.UNK) > whole.score((lm.BOS, whole.word_id("dog")), whole.UNK) + 1.0
    with pytest.raises(BadInputError, match="--min-word-count: expected a count >= 1, got 0"):
        estimate_arpa(TEXT.splitlines(), 3, min_word_count=0)
    with pytest.raises(BadInputError, match="--min-word-count 99: no word of the text is seen that often .*'the', 9 "
                                            "times"):
        estimate_arpa(TEXT.splitlines(), 3, min_word_count=99)


def test_lm_build_cli_and_bad_text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    done = _cli("lm", "build", "--text", str(text), "--order", "2", "--out", str(tmp_path / "lm"))
    assert done.returncode == 0, done.stderr
    assert "2-gram LM of" in done.stdout and (tmp_path / "lm" / "lm.arpa").is_file()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n123?!\n" * 0 + "\n \n")
    done = _cli("lm", "build", "--text", str(empty), "--out", str(tmp_path / "lm2"))
    assert done.returncode == 2 and str(empty) in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lm2").exists()


_TINY_ARPA = """\\data\\
ngram 1=5
ngram 2=3
ngram 3=1

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.5\t</s>
-0.3\ta\t-0.2
-0.6\tb\t-0.4

\\2-grams:
-0.2\t<s> a\t-0.1
-0.7\ta b\t-0.3
-0.05\tb </s>

\\3-grams:
-0.15\t<s> a b

\\end\\
"""


def test_scores_follow_the_arpa_back_off_rule():
    """Hand-written ARPA: each query's ln score is the sum the back-off rule gives, from the file's numbers."""
    from allinone_runtime.ngram import LN10, parse_arpa

    lm = parse_arpa(_TINY_ARPA.encode(), "tiny.arpa", 3)
    bos, eos, a, b = lm.BOS, lm.EOS, lm.word_id("a"), lm.word_id("b")
    assert lm.score((bos, a), b) == -0.15 * LN10  # the trigram itself
    assert lm.score((bos, a), eos) == pytest.approx((-0.1 - 0.2 - 0.5) * LN10)  # bow(<s> a) + bow(a) + p(</s>)
    assert lm.score((a, b), eos) == pytest.approx((-0.3 - 0.05) * LN10)  # bow(a b) + p(</s> | b)
    assert lm.score((b, b), a) == pytest.approx((-0.4 - 0.3) * LN10)  # "b b" unseen: no weight; bow(b) + p(a)
    assert lm.score((), lm.word_id("zebra")) == -1.0 * LN10  # outside the lexicon: <unk>
    assert lm.ngrams(3) == [(bos, a, b)] and sorted(lm.ngrams(2)) == sorted([(bos, a), (a, b), (b, eos)])


# ARPA text that breaks the back-off rules, and the refusal both runtimes give (tests/test_beam_cpp.py, C++)
ARPA_OUTSIDE_THE_RULES = {
    # "<s> a b" without "<s> a": the trigram's back-off context is missing
    "open prefix": (_TINY_ARPA.replace("ngram 2=3", "ngram 2=2").replace("-0.2\t<s> a\t-0.1\n", ""),
                    "lm.arpa:1[0-9]: the 3-gram's first 2 words are not an n-gram of the model"),
    "repeated 2-gram": (_TINY_ARPA.replace("ngram 2=3", "ngram 2=4").replace("-0.05\tb </s>", "-0.05\tb </s>\n-0.2\t<s> a"),
                        "lm.arpa: a 2-gram is written twice"),
    "repeated unigram": (_TINY_ARPA.replace("ngram 1=5", "ngram 1=6").replace("-0.6\tb\t-0.4", "-0.6\tb\t-0.4\n-0.3\ta"),
                         "lm.arpa:[0-9]+: the unigram 'a' is written twice"),
}


@pytest.mark.parametrize("damage", sorted(ARPA_OUTSIDE_THE_RULES))
def test_an_arpa_outside_the_back_off_rules_is_refused_with_one_line(damage):
    from allinone_runtime.ngram import parse_arpa

    text, match = ARPA_OUTSIDE_THE_RULES[damage]
    with pytest.raises(RuntimeInputError, match=match) as err:
        parse_arpa(text.encode(), "lm.arpa", 3)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "version"])
def test_damaged_lm_is_refused_with_one_line(lm_dir, tmp_path, damage):
    import shutil

    bad = tmp_path / "lm"
    shutil.copytree(lm_dir, bad)
    arpa, meta_path = bad / "lm.arpa", bad / "lm.json"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        arpa.write_bytes(arpa.read_bytes()[:-200])
    elif damage == "flip":
        data = bytearray(arpa.read_bytes())
        data[100] ^= 1
        arpa.write_bytes(bytes(data))
    elif damage == "foreign":  # a file that is not an ARPA model, described as one
        import hashlib

        data = b"PK\x03\x04 not a language model" * 10
        arpa.write_bytes(data)
        meta["arpa"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        meta_path.write_text(json.dumps(meta))
    else:
        meta["format_version"] = 99
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(RuntimeInputError) as err:
        load_lm(bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message


def test_beam_with_lm_fixes_phonetic_spellings_on_real_speech(lm_dir, sample_log_probs):
    log_probs, vocab = sample_log_probs
    greedy = decode_greedy(greedy_ids(log_probs), vocab, 0.04)[0]
    beam = BeamDecoder(vocab, load_lm(lm_dir), DecoderOptions(beam=8)).decode(log_probs)
    reference = (ROOT / "sdk/allinone/assets/sample.txt").read_text().split()
    assert greedy.split() != reference  # the model alone misspells words ("ron fakxs", "lasy")
    assert beam.split() == reference, (greedy, beam)


def test_lm_words_outside_the_units_are_refused(tmp_path, sample_log_probs):
    _, vocab = sample_log_probs
    text = tmp_path / "t.txt"
    text.write_text("the café is open\n")  # normalised to "the cafe is open": spellable
    build_lm([text], 2, tmp_path / "ok")
    BeamDecoder(vocab, load_lm(tmp_path / "ok"))
    with pytest.raises(RuntimeInputError, match="cannot be spelled with the model's units"):
        BeamDecoder(vocab[:5], load_lm(tmp_path / "ok"))  # a model with only a few letters


def test_hotwords_parse_and_unspellable_ones_are_reported(lm_dir, sample_log_probs):
    _, vocab = sample_log_probs
    hotwords = parse_hotwords("# contacts\nada lovelace :2.5\n\nzoë\n", "hw.txt")
    assert [(h.phrase, h.boost) for h in hotwords] == [("ada lovelace", 2.5), ("zoë", 1.5)]
    decoder = BeamDecoder(vocab, load_lm(lm_dir), hotwords=hotwords)
    assert decoder.skipped_hotwords == [("zoë", "ë")]
    with pytest.raises(RuntimeInputError, match="hw.txt:1"):
        parse_hotwords("ada :lots\n", "hw.txt")
    with pytest.raises(BadInputError):
        build_lm([lm_dir / "missing.txt"], 3, lm_dir.parent / "x")


CONTACT_CLIP = ROOT / "tests/fixtures/hotwords/please_call_margaret_tomorrow.wav"  # espeak-ng 1.51, en-us voice
COMMANDS = """please call the office tomorrow
call me at home
please call him now
we will meet tomorrow
please send a message to the office
"""


def test_hotword_turns_a_misrecognised_name_into_the_right_word(tmp_path):
    """A contact name the LM has never seen: without the hotword the decoder writes other words; with it, the name."""
    import torch

    from allinone.checkpoint import load_checkpoint
    from allinone.data.audio import load_audio
    from allinone_runtime.beam import Hotword

    text = tmp_path / "commands.txt"
    text.write_text(COMMANDS)
    lm = load_lm(build_lm([text], 3, tmp_path / "lm").out)
    ckpt = load_checkpoint(CHECKPOINT)
    ckpt.model.eval()
    with torch.no_grad():
        log_probs = ckpt.model(torch.from_numpy(load_audio(CONTACT_CLIP))[None], None, ckpt.targets[0])[0][0].numpy()
    vocab = list(ckpt.tokenizer().vocab)
    options = DecoderOptions(lm_weight=0.8, word_bonus=3.0, oov_penalty=-40.0)
    greedy = decode_greedy(greedy_ids(log_probs), vocab, 0.04)[0]
    plain = BeamDecoder(vocab, lm, options).decode(log_probs)
    boosted = BeamDecoder(vocab, lm, options, [Hotword("margaret")]).decode(log_probs)
    assert "margaret" not in greedy.split() and "margaret" not in plain.split(), (greedy, plain)
    assert "margaret" in boosted.split() and boosted.startswith("please call"), boosted


def test_eval_scores_greedy_and_beam_in_one_command(tmp_path):
    """`allinone eval --lm`: each system twice (greedy, +beam) from one network pass, with decoding times."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT + COMMANDS + "please call margaret tomorrow\n")
    build_lm([text], 3, tmp_path / "lm")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(clip), "text": ref}) + "\n" for clip, ref in
                                [(SAMPLE, (ROOT / "sdk/allinone/assets/sample.txt").read_text().strip()),
                                 (CONTACT_CLIP, "please call margaret tomorrow")]))
    done = _cli("eval", "--checkpoint", str(CHECKPOINT), "--manifest", str(manifest), "--subnet", "d12-f512-h4-w32",
                "--lm", str(tmp_path / "lm"), "--hyps-dir", str(tmp_path / "hyps"), "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["subnet"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {"d12-f512-h4-w32", "d12-f512-h4-w32+beam"}
    assert rows["d12-f512-h4-w32+beam"]["wer"] < rows["d12-f512-h4-w32"]["wer"]
    assert "decoding time: network" in done.stderr and "x greedy" in done.stderr
    assert (tmp_path / "hyps" / "d12-f512-h4-w32+beam.hyps.jsonl").is_file()
    compare = _cli("compare", str(tmp_path / "hyps" / "d12-f512-h4-w32.hyps.jsonl"),
                   str(tmp_path / "hyps" / "d12-f512-h4-w32+beam.hyps.jsonl"))
    assert compare.returncode == 0, compare.stderr


@pytest.mark.slow
def test_tune_decoder_writes_the_best_setting_into_a_new_bundle(tmp_path):
    """Lowers the smallest shipped system, attaches an LM, tunes on two real clips: a new bundle, old one intact."""
    from allinone.bundle_lm import attach_lm

    text = tmp_path / "text.txt"
    text.write_text(TEXT + COMMANDS + "please call margaret tomorrow\n")
    lm = build_lm([text], 3, tmp_path / "lm").out
    done = _cli("export", "--checkpoint", str(CHECKPOINT), "--subnet", "d4-f128-h2-w4", "--out",
                str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr
    attach_lm(tmp_path / "bundle", lm, DecoderOptions(lm_weight=0.1, word_bonus=0.0))
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(clip), "text": ref}) + "\n" for clip, ref in
                                [(SAMPLE, (ROOT / "sdk/allinone/assets/sample.txt").read_text().strip()),
                                 (CONTACT_CLIP, "please call margaret tomorrow")]))
    before = (tmp_path / "bundle" / "manifest.json").read_text()
    done = _cli("tune-decoder", "--bundle", str(tmp_path / "bundle"), "--manifest", str(manifest),
                "--lm-weights", "0.1,0.9", "--word-bonuses", "0,3.5", "--out", str(tmp_path / "tuned"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bundle" / "manifest.json").read_text() == before
    tuned = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["decoder"]
    rows = [line for line in done.stdout.splitlines() if line.startswith("lm_weight")]
    assert len(rows) == 4
    best = min(rows, key=lambda line: float(line.split("WER ")[1].rstrip("%")))
    assert float(best.split()[1]) == tuned["defaults"]["lm_weight"]
    assert float(best.split()[3]) == tuned["defaults"]["word_bonus"]
    from allinone_runtime.transcribe import Transcriber

    assert Transcriber(tmp_path / "tuned").transcribe(SAMPLE).text == tuned["verification"]["text"]
