"""Evaluation: greedy CTC decoding, WER/CER of nested systems on real audio, hyps.jsonl, the MAPSSWE test and
`allinone compare`."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from unittest import mock

import jiwer
import pytest
import torch

from allinone.data import CharTokenizer, read_jsonl
from allinone.errors import BadInputError
from allinone.evaluate import (
    HYPOTHESES_FORMAT_VERSION,
    evaluate,
    format_results_table,
    greedy_decode,
    load_hypotheses,
    mapsswe,
    results_to_json,
    save_hypotheses,
    score_utterance,
    system_result,
)
from allinone.models.conformer import conformer_tiny

CLI = Path(sys.executable).with_name("allinone")
REF = "one two three four five six seven eight"


def system(hyps: list[str], refs: list[str] | None = None, name: str = "sys", ids: list[str] | None = None):
    """A SystemResult from hand-written hypotheses (reference REF unless given)."""
    refs = refs or [REF] * len(hyps)
    ids = ids or [f"u{i}" for i in range(len(hyps))]
    return system_result(name, [score_utterance(i, r, h) for i, r, h in zip(ids, refs, hyps)],
                         params=1, bytes=1, macs_per_second=1)


def sub(words: str, positions: list[int]) -> str:
    """`words` with the words at `positions` replaced by 'x' (one substitution each)."""
    out = words.split()
    for p in positions:
        out[p] = "x"
    return " ".join(out)


# ---- greedy decoding ------------------------------------------------------------------------------------------


def test_greedy_decode_collapses_repeats_drops_blanks_and_ignores_padding():
    tok = CharTokenizer()
    a, b, c, space = (tok.encode(ch)[0] for ch in "abc ")
    rows = [[a, a, 0, a, b, b, space, c],  # -> "aab c": repeats merge, a blank separates a real repeat
            [0, c, c, 0, 0, a, a, a]]  # length 4: the padding frames (a a a) must not appear
    log_probs = torch.log_softmax(10 * torch.nn.functional.one_hot(torch.tensor(rows), len(tok)).float(), -1)
    assert greedy_decode(log_probs, torch.tensor([8, 4]), tok) == ["aab c", "c"]  # (B=2, T=8, V=29)
    with pytest.raises(BadInputError, match="lengths"):
        greedy_decode(log_probs, torch.tensor([8]), tok)


# ---- evaluate on real audio -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(synth_corpus):
    """Two nested systems of an untrained conformer_tiny over the synthetic dev split (garbage text, real plumbing).

    Returns (model, specs, utterances, results, audio files read)."""
    import allinone.data.audio as audio

    tok = CharTokenizer()
    torch.manual_seed(0)
    model = conformer_tiny(len(tok))
    model.train()  # evaluate must switch to eval and back
    utterances = read_jsonl(synth_corpus / "dev.jsonl").utterances
    specs = [model.search_space.largest(), model.search_space.smallest()]
    with mock.patch.object(audio, "load_audio", wraps=audio.load_audio) as load_audio:
        results = evaluate(model, specs, utterances, tok, batch_seconds=8.0, progress=False)
    return model, specs, utterances, results, [c.args[0] for c in load_audio.call_args_list]


def test_evaluate_scores_every_system_consistently_with_jiwer(evaluated, tmp_path):
    from allinone.size import subnet_size

    model, specs, utterances, results, _ = evaluated
    assert model.training, "evaluate must restore the model's train mode"
    assert [r.subnet for r in results] == [s.id for s in specs]
    for spec, r in zip(specs, results):
        assert r.n_utterances == len(utterances) == len(r.hypotheses)
        assert [h.ref for h in r.hypotheses] == [u.text for u in utterances]
        size = subnet_size(model, spec)
        assert (r.params, r.bytes, r.macs_per_second) == (size.params, size.weight_bytes, size.macs_per_second)
        # From the saved file alone, jiwer's corpus-level rates reproduce the result.
        path = tmp_path / f"{r.subnet}.jsonl"
        save_hypotheses(r, path, checkpoint="ckpt", manifest="dev.jsonl")
        entries = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        refs, hyps = [e["ref"] for e in entries], [e["hyp"] for e in entries]
        assert r.wer == pytest.approx(jiwer.wer(refs, hyps))
        assert r.cer == pytest.approx(jiwer.cer(refs, hyps))
        assert r.wer == pytest.approx(sum(e["errors"] for e in entries) / sum(e["ref_words"] for e in entries))
    table = format_results_table(results)
    assert all(r.subnet in table for r in results) and f"{results[0].wer:.2%}" in table
    rows = json.loads(results_to_json(results))
    assert [row["subnet"] for row in rows] == [s.id for s in specs]
    assert {"subnet", "wer", "cer", "params", "bytes"} <= set(rows[0])


def test_evaluate_reads_each_audio_file_once_for_all_systems(evaluated):
    _, specs, utterances, _, files_read = evaluated
    assert len(specs) == 2 and sorted(files_read) == sorted(u.audio_filepath for u in utterances)


def test_evaluate_refuses_bad_specs_and_empty_input(evaluated):
    from allinone.spec import SubnetSpec

    model, _, utterances, _, _ = evaluated
    tok = CharTokenizer()
    with pytest.raises(BadInputError, match="not in the search space"):
        evaluate(model, [SubnetSpec(9, 64, 1, 32)], utterances, tok, progress=False)
    with pytest.raises(BadInputError, match="no utterances"):
        evaluate(model, [model.search_space.largest()], [], tok, progress=False)


# ---- hyps.jsonl -----------------------------------------------------------------------------------------------


def test_hypotheses_round_trip(evaluated, tmp_path):
    result = evaluated[3][0]
    path = tmp_path / "out" / "hyps.jsonl"
    save_hypotheses(result, path, checkpoint="checkpoints/tiny", manifest="dev.jsonl")
    assert [p.name for p in path.parent.iterdir()] == ["hyps.jsonl"]  # no temp file left behind
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format_version"] == HYPOTHESES_FORMAT_VERSION and header["subnet"] == result.subnet
    assert (header["checkpoint"], header["manifest"]) == ("checkpoints/tiny", "dev.jsonl")
    loaded = load_hypotheses(path)
    assert loaded == dataclasses.replace(result, checkpoint="checkpoints/tiny", manifest="dev.jsonl")


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda h, e: (h | {"format_version": 2}, e), "format_version: expected 1"),
    (lambda h, e: ({k: v for k, v in h.items() if k != "kind"}, e), "not a hypotheses file"),
    (lambda h, e: (h | {"colour": "red"}, e), "unknown key 'colour'"),
    (lambda h, e: (h, e[:-1]), "header says 3 utterances, the file has 2"),
    (lambda h, e: (h, [e[0] | {"errors": 0}] + e[1:]), "errors: 0 does not match"),
    (lambda h, e: (h, [e[0], e[1] | {"id": e[0]["id"]}, e[2]]), "repeats line 2"),
    (lambda h, e: (h | {"wer": 0.5}, e), "wer 0.5 does not match"),
    (lambda h, e: (h, [e[0] | {"ref_words": "5"}] + e[1:]), "ref_words: expected an integer"),
])
def test_load_hypotheses_rejects_bad_files(tmp_path, edit, message):
    good = tmp_path / "good.jsonl"
    save_hypotheses(system([sub(REF, [0]), REF, REF + " extra"]), good)
    header, *entries = (json.loads(line) for line in good.read_text().splitlines())
    header, entries = edit(header, entries)
    with pytest.raises(BadInputError, match=message):
        load_hypotheses(_write(tmp_path / "bad.jsonl", [header, *entries]))


def test_load_hypotheses_names_the_file_and_line(tmp_path):
    with pytest.raises(BadInputError, match=r"missing\.jsonl: no such file"):
        load_hypotheses(tmp_path / "missing.jsonl")
    with pytest.raises(BadInputError, match=r"broken\.jsonl:2: not valid JSON"):
        load_hypotheses(_write(tmp_path / "broken.jsonl", [{"kind": "x"}, "{not json"]))


# ---- MAPSSWE --------------------------------------------------------------------------------------------------


def test_segments_need_two_consecutive_words_both_systems_got_right():
    # One shared correct word (w2) between the errors: one segment holding both errors.
    r = mapsswe(system([sub(REF, [1])]), system([sub(REF, [3])]))
    assert [(s.errors_a, s.errors_b) for s in r.segments] == [(1, 1)]
    # Two shared correct words (w2, w3) between them: two segments.
    r = mapsswe(system([sub(REF, [1])]), system([sub(REF, [4])]))
    assert [(s.start, s.end, s.errors_a, s.errors_b) for s in r.segments] == [(0, 2, 1, 0), (4, 5, 0, 1)]
    # ...unless a word is inserted between those two: then they are not consecutive and the segments merge.
    r = mapsswe(system([sub(REF, [1])]), system(["one two three uh four x six seven eight"]))
    assert [(s.errors_a, s.errors_b) for s in r.segments] == [(1, 2)]
    # Utterance ends bound segments too: an insertion after the last word is a segment of its own.
    r = mapsswe(system([REF + " uh"]), system([REF]))
    assert [(s.start, s.end, s.errors_a, s.errors_b) for s in r.segments] == [(8, 8, 1, 0)]


def test_identical_systems_are_not_significant():
    hyps = [sub(REF, [i % 8]) for i in range(20)]
    r = mapsswe(system(hyps), system(hyps))
    assert (r.n_segments, r.mean_diff, r.z, r.p_value, r.significant, r.better) == (20, 0.0, 0.0, 1.0, False, None)
    perfect = mapsswe(system([REF] * 5), system([REF] * 5))  # no errors at all: no segments, z undefined
    assert (perfect.n_segments, perfect.z, perfect.p_value, perfect.significant) == (0, None, 1.0, False)


def test_many_extra_errors_over_many_segments_are_significant():
    a = [sub(REF, [0]) if i % 5 == 0 else REF for i in range(60)]
    b = [sub(REF, [0, 1] if i % 3 == 0 else [0]) for i in range(60)]
    r = mapsswe(system(a, name="small"), system(b, name="big"))
    assert r.n_segments == 60 and r.errors_a == 12 and r.errors_b == 80
    assert r.z < -5 and r.p_value < 1e-6 and r.significant and r.better == "a"
    assert (r.system_a, r.system_b, r.wer_a) == ("small", "big", 12 / 480)


def test_a_tiny_difference_is_not_significant():
    # 40 segments with equal errors and one where B makes one more: mean -1/40, std 1/sqrt(40), so z = -1 exactly.
    a = [sub(REF, [0])] * 40
    b = [sub(REF, [0, 1])] + [sub(REF, [0])] * 39
    r = mapsswe(system(a), system(b))
    assert r.n_segments == 40
    assert r.z == pytest.approx(-1.0) and r.p_value == pytest.approx(math.erfc(1 / math.sqrt(2)))
    assert not r.significant and r.better is None


def test_z_matches_a_hand_computation():
    # One segment per utterance, differences A - B = 2, 1, 1, 0, -1, 3 (plus two error-free utterances):
    # mean 1, squared deviations 1+0+0+1+4+4 = 10, variance 10/5 = 2, z = 1 / (sqrt(2)/sqrt(6)) = sqrt(3).
    a = [sub(REF, [0, 1]), sub(REF, [0]), "uh " + REF, sub(REF, [0]), REF, sub(REF, [0, 1, 2]), REF, REF]
    b = [REF, REF, REF, sub(REF, [0]), sub(REF, [0]), REF, REF, REF]
    r = mapsswe(system(a), system(b))
    assert [s.errors_a - s.errors_b for s in r.segments] == [2, 1, 1, 0, -1, 3]
    assert r.mean_diff == pytest.approx(1.0) and r.std_diff == pytest.approx(math.sqrt(2))
    assert r.z == pytest.approx(math.sqrt(3))
    assert r.p_value == pytest.approx(0.0832645, abs=1e-6)  # 2 * (1 - Phi(sqrt 3))
    assert not r.significant


def test_the_same_nonzero_difference_everywhere_is_significant():
    r = mapsswe(system([REF] * 5), system([sub(REF, [0])] * 5))
    assert r.z == -math.inf and r.p_value == 0.0 and r.significant and r.better == "a"
    assert r.to_dict()["z"] is None  # JSON has no infinity


def test_mapsswe_refuses_different_utterance_sets_and_references():
    with pytest.raises(BadInputError, match="different utterances .*'u2' is only in B"):
        mapsswe(system([REF, REF]), system([REF, REF, REF]))
    with pytest.raises(BadInputError, match="utterance 'u1' has different references"):
        mapsswe(system([REF, REF]), system([REF, REF], refs=[REF, "one two"]))
    with pytest.raises(BadInputError, match="at least one utterance"):
        mapsswe([], system([REF]))


def test_mapsswe_matches_utterances_by_id_not_order():
    a = system([sub(REF, [0]), REF], ids=["x", "y"])
    b = system([REF, sub(REF, [0])], ids=["y", "x"])
    r = mapsswe(a, b)
    assert [(s.utterance, s.errors_a, s.errors_b) for s in r.segments] == [("x", 1, 1)]


# ---- allinone compare -----------------------------------------------------------------------------------------


def test_cli_compare(tmp_path):
    a = [sub(REF, [0]) if i % 5 == 0 else REF for i in range(60)]
    b = [sub(REF, [0, 1] if i % 3 == 0 else [0]) for i in range(60)]
    save_hypotheses(system(a, name="d4-f128-h2-w8"), tmp_path / "a.jsonl")
    save_hypotheses(system(b, name="d2-f128-h2-w4"), tmp_path / "b.jsonl")
    out = subprocess.run([str(CLI), "compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["significant"] is True and report["p_value"] < 0.05 and report["better"] == "a"
    assert (report["segments"], report["wer_a"], report["wer_b"]) == (60, 12 / 480, 80 / 480)
    assert (report["system_a"], report["system_b"]) == ("d4-f128-h2-w8", "d2-f128-h2-w4")

    text = subprocess.run([str(CLI), "compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                          capture_output=True, text=True, timeout=60).stdout
    assert "WER 2.50%" in text and "60 segments" in text and "significant at 0.05 (A makes fewer errors)" in text

    save_hypotheses(system(b[:10], name="other"), tmp_path / "c.jsonl")
    bad = subprocess.run([str(CLI), "compare", str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("allinone: error: mapsswe: the systems were scored on")
    assert len(bad.stderr.strip().splitlines()) == 1
