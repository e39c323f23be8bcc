"""`allinone pack`: a training run becomes a shippable checkpoint (weights, config, thinned log; no trainer state)
whose float full system transcribes real speech exactly as before."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from allinone.checkpoint import load_checkpoint
from allinone.evaluate import evaluate
from allinone.files import sha256_file
from allinone.pack import pack_checkpoint, thin_log

ROOT = Path(__file__).parents[1]
ALLINONE = str(Path(sys.executable).parent / "allinone")
SAMPLE = ROOT / "sdk/allinone/assets/sample.wav"


@pytest.fixture()
def run(tmp_path):
    """A float32 'training run' of the trained tiny fixture, with trainer state files and a 25-step log."""
    src = load_checkpoint(ROOT / "tests/fixtures/tiny_overfit")
    from allinone.checkpoint import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run, src.model, targets=src.targets, vocabulary=src.config["vocabulary"],
                    recipe=src.config["recipe"], extra={"trained_steps": 25})
    (run / "trainer_state.json").write_text("{}\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 26)))
    return run


@pytest.fixture()
def dev(tmp_path):
    text = (ROOT / "sdk/allinone/assets/sample.txt").read_text().strip()
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"audio_filepath": str(SAMPLE), "text": text, "duration": 4.05}) + "\n")
    return path


def test_pack_keeps_weights_and_accuracy_drops_trainer_state(run, dev, tmp_path):
    out = tmp_path / "shipped"
    checked = pack_checkpoint(run, out, dtype="float16", dev=dev, log_every=10)
    assert checked["subnet"] == "d2-f128-h2-w32"
    assert checked["dev_wer_before"] == checked["dev_wer_after"] == 0.0  # the fixture learned this clip
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors"]
    packed = load_checkpoint(out)  # verifies the sha256 recorded in config.json
    assert packed.config["weights_dtype"] == "float16"
    assert packed.config["packed_from"]["weights_sha256"] == load_checkpoint(run).config["weights_sha256"]
    assert packed.config["trained_steps"] == 25
    assert packed.config["packed_from"]["dev_check"] == {"manifest": str(dev), "manifest_sha256": sha256_file(dev),
                                                         **checked, "max_wer_change": 0.0}
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [10, 20, 25]
    # The packed float16 weights transcribe the clip exactly as the float32 run does, every target.
    original = load_checkpoint(run)
    from allinone.data.manifest import read_manifest

    utts = read_manifest(dev, tokenizer=original.tokenizer()).utterances
    before = evaluate(original.model, original.targets, utts, original.tokenizer(), progress=False)
    after = evaluate(packed.model, packed.targets, utts, packed.tokenizer(), progress=False)
    assert [r.hypotheses[0].hyp for r in before] == [r.hypotheses[0].hyp for r in after]
    assert (out / "model.safetensors").stat().st_size < (run / "model.safetensors").stat().st_size * 0.6


def test_pack_refuses_existing_out_and_bad_input(run, tmp_path):
    out = tmp_path / "shipped"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = subprocess.run([ALLINONE, "pack", "--checkpoint", str(run), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "user data"
    result = subprocess.run([ALLINONE, "pack", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--dtype", "int8"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--dtype int8" in result.stderr and not (tmp_path / "x").exists()
    result = subprocess.run([ALLINONE, "pack", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "y")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "missing" in result.stderr and not (tmp_path / "y").exists()


def test_pack_force_replaces_and_leaves_no_staging(run, tmp_path):
    out = tmp_path / "shipped"
    pack_checkpoint(run, out, dtype="float32")
    (out / "MODEL_CARD.md").write_text("# notes written by hand\n")
    (out / "eval").mkdir()
    (out / "eval" / "old.hyps.jsonl").write_text("{}\n")  # the old weights' hypotheses
    hand_written = {"format_version": 1, "entries": [{"subnet": "d2-f128-h2-w32", "weight_bits": 32, "params": 1,
                                                      "weight_bytes": 4, "macs_per_second": 1.0, "wer": 0.1}]}
    (out / "catalog.json").write_text(json.dumps(hand_written))  # names no weights: select would trust it
    pack_checkpoint(run, out, dtype="float16", force=True)
    assert load_checkpoint(out).config["weights_dtype"] == "float16"
    assert (out / "MODEL_CARD.md").read_text() == "# notes written by hand\n" and not (out / "eval").exists()
    assert not (out / "catalog.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_repacked_catalog_is_refused_until_measured_again(run, dev, tmp_path):
    """pack --force keeps catalog.json (its lowered memory facts cost minutes); select refuses its WERs, which
    belong to the old weights, until `allinone catalog` has measured the new ones."""
    from allinone.catalog_compute import compute_catalog
    from allinone.errors import BadInputError
    from allinone.select import checkpoint_catalog

    out = tmp_path / "shipped"
    pack_checkpoint(run, out, dtype="float32")
    before = compute_catalog(out, dev, activations=False, progress=False).catalog
    assert checkpoint_catalog(out) == before
    pack_checkpoint(run, out, dtype="float16", force=True)
    assert json.loads((out / "catalog.json").read_text()) == before.to_dict()
    with pytest.raises(BadInputError, match=r"catalog\.json: measured on other weights .*run `allinone catalog "
                                            r"--checkpoint .* --manifest DEV` again$"):
        checkpoint_catalog(out)
    cli = subprocess.run([ALLINONE, "select", "--checkpoint", str(out), "--profile", "pixel-8"],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "measured on other weights" in cli.stderr and len(cli.stderr.splitlines()) == 1
    again = compute_catalog(out, dev, activations=False, progress=False)
    assert again.evaluated == tuple(e.subnet for e in before.entries)  # every WER measured anew
    assert checkpoint_catalog(out).meta["weights_sha256"] == load_checkpoint(out).config["weights_sha256"]


def test_thin_log_keeps_every_nth_and_last():
    text = "".join(json.dumps({"step": s}) + "\n" for s in range(1, 8))
    assert [json.loads(x)["step"] for x in thin_log(text, 3).splitlines()] == [3, 6, 7]


def test_pack_refuses_a_dev_wer_change_beyond_the_accepted_one(run, dev, tmp_path, monkeypatch):
    """The float16 copy of a large model can move a near-tie (conformer_medium: 2 of 2,311 dev words); the
    change is refused unless accepted explicitly, and then only up to the amount given."""
    import allinone.pack
    from allinone.errors import BadInputError, VerificationError

    wers = iter([0.5037, 0.5045] * 3)  # the dev WER of the float32 run, then of the stored copy
    monkeypatch.setattr(allinone.pack, "_dev_wer", lambda *args: next(wers))
    with pytest.raises(VerificationError, match="changes from 0.5037 to 0.5045 in float16, more than 0; .*--max-wer-change"):
        pack_checkpoint(run, tmp_path / "strict", dev=dev)
    assert not (tmp_path / "strict").exists()
    checked = pack_checkpoint(run, tmp_path / "accepted", dev=dev, max_wer_change=0.001)
    assert (checked["dev_wer_before"], checked["dev_wer_after"]) == (0.5037, 0.5045)
    accepted = load_checkpoint(tmp_path / "accepted").config
    assert accepted["weights_dtype"] == "float16"
    assert (accepted["packed_from"]["dev_check"]["dev_wer_after"], accepted["packed_from"]["dev_check"]["max_wer_change"]) == (0.5045, 0.001)
    with pytest.raises(VerificationError, match="more than 0.0005"):
        pack_checkpoint(run, tmp_path / "tight", dev=dev, max_wer_change=0.0005)
    assert not (tmp_path / "tight").exists()
    with pytest.raises(BadInputError, match="--max-wer-change 1.5"):
        pack_checkpoint(run, tmp_path / "bad", dev=dev, max_wer_change=1.5)
