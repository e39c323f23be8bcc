"""Issue 18: non-finite numbers never become a verified bundle, and hostile files never crash a command.

Each case writes real files (WAVs with soundfile, a NaN copy of the tiny checkpoint, YAML and JSON) and runs
the real CLI in a subprocess where the exit code and the one line of output are the behaviour under test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from allinone.checkpoint import load_checkpoint, save_checkpoint
from allinone.data.audio import audio_duration, load_audio, scan_audio
from allinone.data.manifest import read_jsonl, read_manifest
from allinone.errors import BadInputError
from allinone.eval_run import evaluate_checkpoint
from allinone.evaluate import save_hypotheses, score_utterance, system_result
from allinone.files import MAX_NESTING, parse_json, read_json
from allinone.package import describe_bundle, write_bundle
from allinone.train.recipe import load_recipe, recipe_from_dict
from allinone.train.trainer import TrainingStep, train
from allinone_runtime.audio import read_audio
from allinone_runtime.errors import RuntimeInputError
from allinone_runtime.schema import read_json_file

ROOT = Path(__file__).parents[1]
ALLINONE = str(Path(sys.executable).parent / "allinone")
ASSETS = ROOT / "sdk" / "allinone" / "assets"
TINY = ROOT / "tests" / "fixtures" / "tiny_overfit"
TEXT = (ASSETS / "sample.txt").read_text().strip()
SPEECH, SR = sf.read(str(ASSETS / "sample.wav"), dtype="float32")  # (N,) real speech at 16 kHz
# The tiny checkpoint's own targets, so `--init` from it trains them.
INIT_RECIPE = {"name": "init", "model": "conformer_tiny", "targets": ["d2-f128-h2-w32", "d1-f64-h1-w4"],
               "systems_per_step": None, "kl_weight": 0.5, "lr": 0.001, "warmup_steps": 1, "max_steps": 2,
               "max_batch_seconds": 10, "num_workers": 0, "checkpoint_minutes": 60, "seed": 0}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ALLINONE, *args], capture_output=True, text=True, timeout=900, cwd=cwd)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The one `allinone: error:` line of stderr, which must be its last (progress bars and logs may precede it)
    and come without a traceback."""
    lines = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    errors = [line for line in lines if line.startswith("allinone: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def _corpus(tmp_path: Path, nan_utterance: int | None = None, copies: int = 4) -> Path:
    """A JSONL manifest of `copies` real speech clips (ids u0, u1, ...); one may hold NaN samples."""
    lines = []
    for i in range(copies):
        wave = SPEECH.copy()
        if i == nan_utterance:
            wave[1000:1010] = np.nan
        sf.write(tmp_path / f"u{i}.wav", wave, SR, subtype="FLOAT" if i == nan_utterance else "PCM_16")
        lines.append(json.dumps({"audio_filepath": f"u{i}.wav", "text": TEXT, "id": f"u{i}"}))
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _nan_checkpoint(tmp_path: Path) -> Path:
    """The tiny checkpoint with every weight NaN, saved as a real checkpoint (what a NaN run used to write)."""
    ckpt = load_checkpoint(TINY)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.fill_(float("nan"))
    out = tmp_path / "nan_ckpt"
    save_checkpoint(out, ckpt.model, targets=ckpt.targets, vocabulary=ckpt.config["vocabulary"])
    return out


def _truncated_wav(path: Path) -> Path:
    """A WAV whose header promises the 4 s clip but whose data stops after 1 KB."""
    sf.write(path, SPEECH, SR, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:44 + 1024])
    return path


# --- 1. NaN in, never "verified" out -------------------------------------------------------------------------

def test_nan_corpus_trains_to_a_one_line_refusal_and_no_checkpoint(tmp_path):
    manifest = _corpus(tmp_path, nan_utterance=2)
    out = tmp_path / "run"
    done = _run("train", "--recipe", "tiny", "--train", str(manifest), "--dev", str(manifest), "--out", str(out),
                "--max-steps", "2", "--no-progress")
    assert done.returncode == 2
    assert _one_error_line(done) == (f"allinone: error: {tmp_path / 'u2.wav'}: 10 NaN or infinite samples (first at "
                                     f"0.062 s); expected finite samples in [-1, 1]")
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()


def test_nonfinite_loss_stops_training_naming_the_batch_and_writes_nothing(tmp_path, caplog):
    manifest = _corpus(tmp_path)
    start = _nan_checkpoint(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(BadInputError, match=r"^step 1: non-finite CTC loss of d2-f128-h2-w32, .*gradient \(NaN or inf\) "
                                            r"on the batch of utterances u\d; expected finite numbers"):
        train(recipe_from_dict(INIT_RECIPE), manifest, manifest, out, init=start, progress=False)
    assert not (out / "config.json").exists()
    # --skip-nonfinite N: N such batches are skipped with a warning, then training stops all the same.
    with caplog.at_level(logging.WARNING, logger="allinone.train.trainer"), \
            pytest.raises(BadInputError, match="^step 1: non-finite"):
        train(recipe_from_dict(INIT_RECIPE), manifest, manifest, tmp_path / "run2", init=start, progress=False,
              skip_nonfinite=1)
    assert any("skipped a batch with a non-finite" in r.getMessage() and "1 of 1 allowed" in r.getMessage()
               for r in caplog.records)
    assert not (tmp_path / "run2" / "config.json").exists()


def test_a_nonfinite_step_leaves_the_weights_unchanged_and_a_finite_one_trains():
    from allinone.data.batching import collate_speech

    ckpt = load_checkpoint(TINY)
    model, recipe = ckpt.model, recipe_from_dict(INIT_RECIPE)
    targets = ckpt.tokenizer().encode(TEXT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    loop = TrainingStep(recipe, model, optimizer, ckpt.targets, torch.device("cpu"), rank=0, world=1)
    clean = torch.from_numpy(SPEECH.copy())
    broken = clean.clone()
    broken[500] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = loop.step(collate_speech([(broken, torch.tensor(targets)), (clean, torch.tensor(targets))]), 0)
    assert "gradient" in record["nonfinite"] and set(record) == {"nonfinite"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    record = loop.step(collate_speech([(clean, torch.tensor(targets))]), 0)
    assert "nonfinite" not in record and np.isfinite(record["loss"]) and record["grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_eval_refuses_a_nan_model_and_a_nan_wav_like_transcribe(tmp_path):
    manifest = _corpus(tmp_path, copies=1)
    done = _run("eval", "--checkpoint", str(_nan_checkpoint(tmp_path)), "--manifest", str(manifest))
    assert done.returncode == 2
    assert _one_error_line(done).startswith("allinone: error: system d2-f128-h2-w32: non-finite log-probs (NaN or "
                                            "inf) on utterance u0; expected finite scores")
    (tmp_path / "nan").mkdir()
    nan_manifest = _corpus(tmp_path / "nan", nan_utterance=0, copies=1)
    ckpt = tmp_path / "tiny"
    shutil.copytree(TINY, ckpt)
    with pytest.raises(BadInputError) as sdk:
        evaluate_checkpoint(ckpt, nan_manifest, progress=False)
    with pytest.raises(RuntimeInputError) as runtime:  # what `transcribe` reads the same file with
        read_audio(tmp_path / "nan" / "u0.wav", 16000)
    assert str(sdk.value) == str(runtime.value)
    assert "NaN or infinite samples" in str(sdk.value) and not (ckpt / "eval").exists()


def test_catalog_refuses_nonfinite_log_probs(tmp_path):
    from allinone.catalog_compute import compute_catalog

    ckpt = _nan_checkpoint(tmp_path)
    with pytest.raises(BadInputError, match="non-finite log-probs"):
        compute_catalog(ckpt, _corpus(tmp_path, copies=1), activations=False, progress=False)
    assert not (ckpt / "catalog.json").exists()


def test_a_nan_model_cannot_be_exported(tmp_path):
    out = tmp_path / "bundle"
    done = _run("export", "--checkpoint", str(_nan_checkpoint(tmp_path)), "--subnet", "d1-f64-h1-w32",
                "--out", str(out))
    assert done.returncode == 4
    assert _one_error_line(done) == ("allinone: error: verification on sample.wav: non-finite log-probs (NaN or inf) "
                                     "from the .pte and the eager model; expected finite scores (are the "
                                     "checkpoint's weights finite?)")
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_json_writers_refuse_nan_and_readers_refuse_nan_literals(tmp_path):
    result = dataclasses.replace(system_result("d1-f64-h1-w4", [score_utterance("u0", "a b", "a b")], params=1,
                                               bytes=1, macs_per_second=1), wer=float("nan"))
    with pytest.raises(ValueError, match="not JSON compliant"):
        save_hypotheses(result, tmp_path / "h.jsonl")
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_bundle(tmp_path / "b", b"pte", {"verification": {"max_abs_diff": float("nan")}})
    assert not (tmp_path / "h.jsonl").exists() and not (tmp_path / "b").exists()
    for text, message in [('{"max_abs_diff": NaN}', "NaN is not a JSON number"),
                          ('{"x": -Infinity}', "-Infinity is not a JSON number"),
                          ('{"x": 1e999}', "1e999 overflows a float")]:
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(BadInputError, match=message):
            read_json(tmp_path / "m.json", "a test file")
        with pytest.raises(RuntimeInputError, match=message):
            read_json_file(tmp_path / "m.json", "a test file")


# --- 2. deep or huge YAML and JSON ---------------------------------------------------------------------------

def _deep_yaml(path: Path, depth: int = 500) -> Path:
    path.write_text("x: " + "[" * depth + "]" * depth + "\n")  # 1 KB
    return path


@pytest.mark.parametrize("command", [
    ["profiles", "validate", "{file}"],
    ["select", "--catalog", "{catalog}", "--profile", "{file}"],
    ["train", "--recipe", "{file}", "--train", "x.jsonl", "--dev", "x.jsonl", "--out", "o"],
])
def test_500_deep_yaml_is_exit_2_and_one_line(tmp_path, command):
    deep = _deep_yaml(tmp_path / "deep.yaml")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"format_version": 1, "kind": "allinone-catalog", "entries": []}))
    done = _run(*[a.format(file=deep, catalog=catalog) for a in command], cwd=tmp_path)
    assert done.returncode == 2
    assert _one_error_line(done).startswith(f"allinone: error: {deep}: nested more than {MAX_NESTING} levels deep "
                                            f"at line 1; expected a ")


def test_deep_and_huge_json_are_one_line_errors(tmp_path):
    deep = tmp_path / "catalog.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    done = _run("select", "--catalog", str(deep), "--profile", "pixel-8")
    assert done.returncode == 2
    assert _one_error_line(done) == (f"allinone: error: {deep}: nested more than {MAX_NESTING} levels deep; "
                                     f"expected a catalog (catalog.json)")
    with pytest.raises(BadInputError, match="nested more than 32 levels deep"):
        parse_json("[" * 40 + "]" * 40, "x")  # under the interpreter's limit, over ours
    assert parse_json("[" * 32 + "]" * 32, "x") is not None
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(17 * 2**20)
    with pytest.raises(BadInputError, match=r"big\.json: 17,825,792 bytes; expected a test file of at most"):
        read_json(big, "a test file")
    with pytest.raises(RuntimeInputError, match="bytes; expected a bundle manifest of at most"):
        read_json_file(big, "a bundle manifest")
    (tmp_path / "m.jsonl").write_text("[" * 3000 + "]" * 3000 + "\n")
    assert "nested more than" in read_jsonl(tmp_path / "m.jsonl").problems[0].reason


def test_nonfinite_recipe_numbers_are_refused(tmp_path):
    data = yaml.safe_load((ROOT / "recipes" / "tiny.yaml").read_text())
    for key, value in [("lr", float("nan")), ("grad_clip", float("inf")), ("kl_weight", float("nan"))]:
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({**data, key: value}))  # written as .nan / .inf
        with pytest.raises(BadInputError, match=f"{key}: expected a non-negative float"):
            load_recipe(path)
    path.write_text(yaml.safe_dump({**data, "loss_weights": {data["targets"][0]: float("nan")}}))
    with pytest.raises(BadInputError, match="loss_weights: expected a mapping from target ids to finite"):
        load_recipe(path)


# --- 3. truncated, non-finite and out-of-range audio ---------------------------------------------------------

def test_truncated_wav_is_an_error_in_every_reader(tmp_path):
    wav = _truncated_wav(tmp_path / "cut.wav")
    message = "truncated WAV: the header promises 64836 frames (4.05 s), the file holds 512 (0.03 s)"
    for read in (audio_duration, load_audio, scan_audio):
        with pytest.raises(BadInputError, match=re.escape(message)):
            read(wav)
    with pytest.raises(RuntimeInputError, match=re.escape(message)):
        read_audio(wav, 16000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "cut.wav", "text": TEXT}) + "\n")
    done = _run("data", "check", str(tmp_path / "m.jsonl"), "--strict")
    assert done.returncode == 2
    assert _one_error_line(done) == (f"allinone: error: {tmp_path / 'm.jsonl'}:1: {wav}: {message}; expected a "
                                     f"complete audio file (strict mode stops at the first bad entry)")


def test_truncated_flac_is_unreadable_not_shorter(tmp_path):
    sf.write(tmp_path / "a.flac", SPEECH, SR)
    data = (tmp_path / "a.flac").read_bytes()
    (tmp_path / "a.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="unreadable audio"):
        load_audio(tmp_path / "a.flac")


def test_beyond_full_scale_is_a_warning_with_its_peak(tmp_path, caplog):
    sf.write(tmp_path / "loud.wav", SPEECH * 1000, SR, subtype="FLOAT")
    peak = float(np.abs(SPEECH).max()) * 1000
    with caplog.at_level(logging.WARNING):
        load_audio(tmp_path / "loud.wav")
        read_audio(tmp_path / "loud.wav", 16000)
    warnings = [r.getMessage() for r in caplog.records if "beyond full scale" in r.getMessage()]
    assert len(warnings) == 2 and all(f"peak {peak:.4g}" in w and "expected samples in [-1, 1]" in w
                                      for w in warnings)


def test_data_check_deep_reports_nonfinite_clipped_silent_and_truncated(tmp_path):
    sf.write(tmp_path / "good.wav", SPEECH, SR)
    sf.write(tmp_path / "nan.wav", np.where(np.arange(len(SPEECH)) == 7, np.nan, SPEECH).astype(np.float32), SR,
             subtype="FLOAT")
    sf.write(tmp_path / "clipped.wav", np.clip(SPEECH * 20, -1, 1), SR)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), SR)
    sf.write(tmp_path / "loud.wav", SPEECH * 1000, SR, subtype="FLOAT")
    _truncated_wav(tmp_path / "cut.wav")
    names = ["good", "nan", "clipped", "silent", "loud", "cut"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": f"{n}.wav", "text": TEXT}) + "\n" for n in names))

    shallow = read_manifest(manifest)  # headers only: NaN passes, truncation does not
    assert len(shallow.utterances) == 5 and [p.line for p in shallow.problems] == [6] and not shallow.warnings
    deep = read_manifest(manifest, deep=True)
    assert [Path(u.audio_filepath).stem for u in deep.utterances] == ["good", "clipped", "silent", "loud"]
    reasons = {p.line: p.reason for p in deep.problems}
    assert "1 NaN or infinite samples (first at 0.000 s)" in reasons[2] and "truncated WAV" in reasons[6]
    warned = {p.line: p.reason for p in deep.warnings}
    assert sorted(warned) == [3, 4, 5]
    assert "clipped:" in warned[3] and "silent: peak digital zero" in warned[4] and "beyond full scale" in warned[5]

    done = _run("data", "check", "--deep", str(manifest))
    assert done.returncode == 0
    assert done.stdout.strip() == f"{manifest}: 4 utterances, 0.004 h, 0 speakers, 2 skipped, 3 warnings"
    assert [line.split(" ")[0] for line in done.stderr.splitlines()] == ["skipped"] * 2 + ["warning"] * 3
    done = _run("data", "check", "--strict", str(manifest))  # --strict reads samples too
    assert done.returncode == 2 and "nan.wav: 1 NaN or infinite samples" in _one_error_line(done)


def test_empty_manifest_fails_strict(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    done = _run("data", "check", "--strict", str(tmp_path / "empty.jsonl"))
    assert done.returncode == 2
    assert _one_error_line(done) == (f"allinone: error: {tmp_path / 'empty.jsonl'}: no utterances; expected at least "
                                     f"one entry (strict mode)")
    assert _run("data", "check", str(tmp_path / "empty.jsonl")).returncode == 0  # a report, not a check


def test_nonfinite_durations_are_bad_entries(tmp_path):
    sf.write(tmp_path / "a.wav", SPEECH, SR)
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav", "text": "hi", "duration": NaN}\n'
                                      '{"audio_filepath": "a.wav", "text": "hi", "duration": Infinity}\n')
    (tmp_path / "m.tsv").write_text("path\ttext\tduration\na.wav\thi\tnan\na.wav\thi\tinf\n")
    for name in ("m.jsonl", "m.tsv"):
        result = read_manifest(tmp_path / name)
        assert not result.utterances and all("duration" in p.reason for p in result.problems)


# --- 4. no traceback for any input; one prefix; the also-seen items ------------------------------------------

def test_unexpected_errors_are_one_line_with_a_debug_hint(monkeypatch, capsys):
    from allinone import cli, info

    def broken(model: str) -> str:
        raise RuntimeError("something no check foresaw\nsecond line")

    monkeypatch.setattr(info, "describe_model", broken)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err == ("allinone: error: unexpected RuntimeError: something no check foresaw (rerun "
                                       "with --debug for the traceback)\n")
    with pytest.raises(RuntimeError):
        cli.main(["info", "--debug"])


def test_a_dataloader_worker_error_is_reported_by_its_own_message(tmp_path):
    from allinone.cli import _one_line
    from allinone.data.batching import make_loader

    utterances = read_manifest(_corpus(tmp_path, nan_utterance=0, copies=1)).utterances
    with pytest.raises(BadInputError) as caught:
        next(iter(make_loader(utterances, num_workers=1, shuffle=False)))
    assert "Traceback" in str(caught.value)  # torch re-raises it with the worker's traceback in the message
    assert _one_line(caught.value) == (f"{tmp_path / 'u0.wav'}: 10 NaN or infinite samples (first at 0.062 s); "
                                       f"expected finite samples in [-1, 1]")


def test_inspect_reports_the_files_byte_count(tmp_path):
    manifest = {"model": {"subnet": {"id": "d1-f64-h1-w4"}, "family": "conformer", "params": 1, "macs_per_second": 1},
                "quantization": {"scheme": "8da4w", "group_size": 32}, "expected": {"wer": None},
                "sizes": {"pte_bytes": 999_999, "weight_bytes": 10, "compression_ratio": 1.0},
                "versions": {"allinone": "0"}}
    bundle = write_bundle(tmp_path / "b", b"x" * 1234, manifest).path
    assert "model.pte 1,234 B" in describe_bundle(bundle)  # the file, not the manifest's claim
    (bundle / "manifest.json").write_text(json.dumps({**json.loads((bundle / "manifest.json").read_text()),
                                                      "sizes": "tampered"}))
    done = _run("inspect", str(bundle))
    assert done.returncode == 2 and "missing or malformed entry" in _one_error_line(done)


def test_manifest_named_dotdot_keeps_hypotheses_inside_eval(tmp_path, monkeypatch):
    data = tmp_path / "devset"
    (data / "sub").mkdir(parents=True)
    sf.write(data / "a.wav", SPEECH, SR)
    (data / "wav.scp").write_text(f"a {data / 'a.wav'}\n")
    (data / "text").write_text(f"a {TEXT}\n")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    monkeypatch.chdir(data / "sub")
    evaluate_checkpoint(ckpt, "..", subnets=["d1-f64-h1-w4"], progress=False)
    assert (ckpt / "eval" / "devset" / "d1-f64-h1-w4.hyps.jsonl").is_file()
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "eval", "model.safetensors"]

