"""One-pass all-in-one training on synthesised speech: save, resume (also after SIGKILL), DDP, bad input."""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import torch

from allinone.checkpoint import load_checkpoint
from allinone.data.tokenizer import SentencePieceTokenizer
from allinone.errors import BadInputError
from allinone.eval_run import evaluate_checkpoint
from allinone.pack import pack_checkpoint
from allinone.spec import SubnetSpec
from allinone.train.recipe import load_recipe, recipe_from_dict
from allinone.train.averaging import WeightAverage
from allinone.train.state import load_raw_weights
from allinone.train.trainer import choose_systems, learning_rate, train

ALLINONE = str(Path(sys.executable).parent / "allinone")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _recipe_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "tiny.yaml").read_text())
    data.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sandwich_sampling_and_schedule():
    targets = [SubnetSpec.from_id(t) for t in load_recipe("tiny").targets]
    for step in range(20):
        chosen = choose_systems(targets, 3, seed=0, step=step)
        assert len(chosen) == 3 and chosen[0] == SubnetSpec(2, 128, 2, 32) and chosen[-1] == SubnetSpec(1, 64, 1, 4)
        assert chosen == choose_systems(targets, 3, seed=0, step=step)  # reproducible per step
    assert len({tuple(choose_systems(targets, 3, 0, s)) for s in range(20)}) > 1
    assert choose_systems(targets, None, 0, 0)[0] == SubnetSpec(2, 128, 2, 32)
    recipe = load_recipe("tiny")
    assert learning_rate(recipe, 0) < learning_rate(recipe, recipe.warmup_steps - 1) == pytest.approx(recipe.lr)
    assert learning_rate(recipe, recipe.max_steps) == pytest.approx(0.05 * recipe.lr)


def test_train_save_resume_and_baseline(synth_corpus, tmp_path):
    recipe = load_recipe("tiny")
    train_m, dev_m = synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl"
    out = tmp_path / "aio"
    result = train(recipe, train_m, dev_m, out, max_steps=6, progress=False)
    assert result.steps == 6 and result.audio_seconds > 0
    first = _metrics(out)
    assert [m["step"] for m in first] == list(range(1, 7))
    assert all(len(m["ctc"]) == 3 for m in first)  # sandwich of 3 systems per step
    assert all(set(m["kl"]) == set(m["ctc"]) - {"d2-f128-h2-w32"} for m in first)  # KL toward the largest

    ckpt = load_checkpoint(out)
    assert [s.id for s in ckpt.targets] == list(recipe.targets)
    assert ckpt.config["trained_steps"] == 6 and ckpt.config["data"]["train"]["sha256"]
    on_this_cpu = {"device": "cpu", "name": platform.processor() or platform.machine(), "processes": 1}
    assert ckpt.config["trained_on"] == on_this_cpu  # so a reader can tell CPU-seconds of training from a GPU's host
    assert ckpt.model.frontend.feature_std.min() > 0 and ckpt.model.frontend.feature_mean.abs().sum() > 0

    result = train(recipe, train_m, dev_m, out, max_steps=10, resume=True, progress=False)
    assert result.steps == 10
    assert [m["step"] for m in _metrics(out)] == list(range(1, 11))
    # A save made after a resume vouches for its own files, so a run can be resumed again and again.
    train(recipe, train_m, dev_m, out, max_steps=12, resume=True, progress=False)
    assert [m["step"] for m in _metrics(out)] == list(range(1, 13))

    # A continuation records where it started, keeps that record across resumes, and a pack carries it on.
    cont = tmp_path / "continued"
    train(recipe, train_m, dev_m, cont, max_steps=1, init=out, progress=False)
    train(recipe, train_m, dev_m, cont, max_steps=2, resume=True, progress=False)
    start = {"path": str(out), "weights_sha256": load_checkpoint(out).config["weights_sha256"], "trained_steps": 12,
             "trained_on": on_this_cpu}
    assert load_checkpoint(cont).config["init"] == start
    pack_checkpoint(cont, tmp_path / "packed")
    packed = load_checkpoint(tmp_path / "packed").config
    assert packed["init"] == start and packed["trained_on"] == on_this_cpu

    results = evaluate_checkpoint(out, dev_m, progress=False)
    assert [r.subnet for r in results] == list(recipe.targets)
    assert all(0.0 <= r.cer and r.n_utterances > 0 for r in results)
    assert sorted(p.name for p in (out / "eval" / "dev").iterdir()) == sorted(f"{t}.hyps.jsonl" for t in recipe.targets)

    base = tmp_path / "only"
    train(recipe, train_m, dev_m, base, max_steps=3, only="d1-f64-h1-w4", progress=False)
    assert all(list(m["ctc"]) == ["d1-f64-h1-w4"] and m["kl"] == {} for m in _metrics(base))
    assert [s.id for s in load_checkpoint(base).targets] == ["d1-f64-h1-w4"]


def test_subword_units_coarse_frames_augmentation_and_bf16_train_and_resume(synth_corpus, tmp_path):
    recipe = load_recipe(_recipe_file(tmp_path, units="bpe", bpe_vocab_size=48, subsampling_factor=8, augment=True,
                                      bf16="on"))
    train_m, dev_m = synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl"
    out = tmp_path / "bpe"
    train(recipe, train_m, dev_m, out, max_steps=3, progress=False)
    ckpt = load_checkpoint(out)
    tokenizer = ckpt.tokenizer()
    assert isinstance(tokenizer, SentencePieceTokenizer) and len(tokenizer) == 49
    assert ckpt.model.cfg.subsampling_factor == 8 and ckpt.model.frame_shift_s == pytest.approx(0.08)
    logged = _metrics(out)
    assert all(m["cpu_s"] > 0 and m["audio_h"] > 0 for m in logged)
    assert logged[-1]["audio_h"] == pytest.approx(sum(m["audio_seconds"] for m in logged) / 3600, abs=1e-4)
    train(recipe, train_m, dev_m, out, max_steps=5, resume=True, progress=False)  # same pieces after resuming
    assert load_checkpoint(out).tokenizer() == tokenizer and len(_metrics(out)) == 5
    results = evaluate_checkpoint(out, dev_m, progress=False)
    assert all(r.n_utterances > 0 for r in results)


def test_training_augmentation_is_fixed_by_seed_epoch_and_item(synth_corpus):
    from allinone.data.augment import TRAINING_AUGMENT
    from allinone.data.batching import SpeechDataset
    from allinone.data.manifest import read_jsonl

    utts = read_jsonl(synth_corpus / "train.jsonl").utterances[:4]
    a, b = (SpeechDataset(utts, augment=TRAINING_AUGMENT, seed=7) for _ in range(2))
    clean = SpeechDataset(utts)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(4))  # a resumed run hears the same audio
    assert any(not torch.equal(a[i][0], clean[i][0]) for i in range(4))
    b.set_epoch(1)  # every epoch hears it differently
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(4))


def test_weight_average_follows_its_formula_and_swaps_back():
    model = torch.nn.Linear(3, 2)
    model.register_buffer("stat", torch.zeros(2))
    average = WeightAverage(model, 0.75)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
        model.stat.fill_(5.0)
    average.update(model)
    assert torch.allclose(average.shadow["weight"], 0.75 * w0 + 0.25 * (w0 + 1.0))
    assert torch.equal(average.shadow["stat"], torch.full((2,), 5.0))  # buffers are copied, not averaged
    raw = model.weight.detach().clone()
    with average.swapped_in(model) as saved:
        assert torch.equal(model.weight, average.shadow["weight"]) and torch.equal(saved["weight"], raw)
    assert torch.equal(model.weight, raw)
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(model, 1.0)


def test_checkpoint_holds_the_average_and_a_resumed_run_continues_exactly(synth_corpus, tmp_path):
    """With ema_decay the checkpoint is the moving average, the trainer state the raw weights; stopping and
    resuming gives the same average and raw weights as an uninterrupted run."""
    base = load_recipe("tiny").to_dict()
    recipe = recipe_from_dict({**base, "ema_decay": 0.9, "checkpoint_steps": 2})
    train_m, dev_m = synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl"
    train(recipe, train_m, dev_m, tmp_path / "straight", max_steps=6, progress=False)
    train(recipe, train_m, dev_m, tmp_path / "split", max_steps=3, progress=False)
    train(recipe, train_m, dev_m, tmp_path / "split", max_steps=6, resume=True, progress=False)
    for run in ("straight", "split"):
        assert load_checkpoint(tmp_path / run).config["recipe"]["ema_decay"] == 0.9
    straight, split = (load_checkpoint(tmp_path / r).model.state_dict() for r in ("straight", "split"))
    raw_straight, raw_split = (load_raw_weights(tmp_path / r) for r in ("straight", "split"))
    assert set(raw_straight) == set(straight)
    for name in straight:
        assert torch.allclose(straight[name], split[name], atol=1e-5), name
        assert torch.allclose(raw_straight[name], raw_split[name], atol=1e-5), name
    assert any(not torch.allclose(straight[n], raw_straight[n]) for n in straight)  # the average is not the raw
    # A run that kept no average can take one up when resumed: it starts from the checkpoint's weights.
    plain = tmp_path / "plain"
    train(recipe_from_dict({**base, "checkpoint_steps": 2}), train_m, dev_m, plain, max_steps=2, progress=False)
    train(recipe, train_m, dev_m, plain, max_steps=4, resume=True, progress=False)
    assert load_checkpoint(plain).config["trained_steps"] == 4 and load_raw_weights(plain)
    with pytest.raises(BadInputError, match="ema_decay: expected a number between 0 and 1"):
        recipe_from_dict({**base, "ema_decay": 1})


def test_sigkill_then_resume_continues_as_if_never_stopped(synth_corpus, tmp_path):
    recipe = _recipe_file(tmp_path, checkpoint_steps=3, max_steps=12)
    args = ["train", "--recipe", str(recipe), "--train", str(synth_corpus / "train.jsonl"),
            "--dev", str(synth_corpus / "dev.jsonl"), "--no-progress"]
    straight = tmp_path / "straight"
    subprocess.run([ALLINONE, *args, "--out", str(straight)], check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([ALLINONE, *args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["step"] >= 6):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved_step = json.loads(state.read_text())["step"]
    assert 6 <= saved_step < 12, saved_step

    done = subprocess.run([ALLINONE, *args, "--out", str(killed), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, (saved_step, done.stderr[-2000:])
    resumed, reference = _metrics(killed), _metrics(straight)
    assert [m["step"] for m in resumed] == list(range(1, 13))  # no step lost or repeated in the log
    # Same data order, same sampled systems, same dropout: the loss curve continues exactly.
    for a, b in zip(resumed, reference):
        assert a["ctc"].keys() == b["ctc"].keys()
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-4), (a["step"], a["loss"], b["loss"])


SAVE_FILES = ("trainer_state.safetensors", "model.safetensors", "config.json", "trainer_state.json")  # rename order


def _run_at_steps_3_and_6(synth_corpus, tmp_path):
    """A run saved at step 3, and the same run continued to step 6 (what its next save holds)."""
    recipe = load_recipe(_recipe_file(tmp_path))
    data = (synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl")
    at3, at6 = tmp_path / "at3", tmp_path / "at6"
    train(recipe, *data, at3, max_steps=3, progress=False)
    shutil.copytree(at3, at6)
    train(recipe, *data, at6, max_steps=6, resume=True, progress=False)
    return recipe, data, at3, at6


def test_a_save_killed_between_its_renames_is_finished_on_resume(synth_corpus, tmp_path):
    """SIGKILL after the step-6 save staged all its files and renamed two: resume completes the renames
    instead of refusing a mixed set (the window formats.md 'Saving' describes)."""
    recipe, data, at3, at6 = _run_at_steps_3_and_6(synth_corpus, tmp_path)
    killed = tmp_path / "killed"
    shutil.copytree(at3, killed)
    shutil.copy(at6 / "metrics.jsonl", killed / "metrics.jsonl")  # the log runs ahead of the saves
    for name in SAVE_FILES:
        (killed / f".{name}.k1ll3d.tmp").write_bytes((at6 / name).read_bytes())
    for name in SAVE_FILES[:2]:
        os.replace(killed / f".{name}.k1ll3d.tmp", killed / name)

    result = train(recipe, *data, killed, max_steps=6, resume=True, progress=False)
    assert result.steps == 6  # step 6 was saved after all: nothing to redo
    for name in SAVE_FILES:
        assert (killed / name).read_bytes() == (at6 / name).read_bytes(), name
    assert not list(killed.glob(".*.tmp"))
    train(recipe, *data, killed, max_steps=7, resume=True, progress=False)
    assert [m["step"] for m in _metrics(killed)] == list(range(1, 8))


def test_a_save_killed_while_staging_resumes_from_the_previous_save(synth_corpus, tmp_path):
    """SIGKILL while the step-6 save was still writing its temporary files: the renamed set is step 3's,
    whole; resume continues from it and removes the half-written files."""
    recipe, data, at3, at6 = _run_at_steps_3_and_6(synth_corpus, tmp_path)
    killed = tmp_path / "killed"
    shutil.copytree(at3, killed)
    shutil.copy(at6 / "metrics.jsonl", killed / "metrics.jsonl")
    for name in SAVE_FILES[:-1]:
        (killed / f".{name}.k1ll3d.tmp").write_bytes((at6 / name).read_bytes())
    state = (at6 / SAVE_FILES[-1]).read_bytes()
    (killed / f".{SAVE_FILES[-1]}.k1ll3d.tmp").write_bytes(state[: len(state) // 2])  # cut mid-write

    result = train(recipe, *data, killed, max_steps=6, resume=True, progress=False)
    assert result.steps == 6 and not list(killed.glob(".*.tmp"))
    resumed, reference = _metrics(killed), _metrics(at6)
    assert [m["step"] for m in resumed] == list(range(1, 7))
    assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in reference], rel=1e-4, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the trainer uses it when present)")
def test_resume_on_cuda_puts_the_optimizer_state_beside_its_parameters(synth_corpus, tmp_path):
    """The saved Adam moments were loaded before the model moved to the GPU, so the first resumed step failed
    with 'Expected all tensors to be on the same device' (seen on an H200, fixed by loading them after)."""
    recipe = load_recipe(_recipe_file(tmp_path))
    data = (synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl")
    out = tmp_path / "run"
    train(recipe, *data, out, max_steps=2, progress=False)
    train(recipe, *data, out, max_steps=4, resume=True, progress=False)
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3, 4]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_the_last_step_and_resume_continues(synth_corpus, tmp_path, sig):
    """No timed or periodic save would come before the signal: the step in hand is finished and saved, with a
    data-loader worker running (the signal goes to the whole process group, as a terminal's Ctrl-C does)."""
    recipe = _recipe_file(tmp_path, max_steps=400, checkpoint_minutes=60, num_workers=1)
    out = tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--train", str(synth_corpus / "train.jsonl"),
            "--dev", str(synth_corpus / "dev.jsonl"), "--no-progress", "--out", str(out)]
    proc = subprocess.Popen([ALLINONE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    assert not (out / "trainer_state.json").exists()  # nothing saved yet
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "finishing this step and saving" in stderr and "interrupted" in stderr
    saved = json.loads((out / "trainer_state.json").read_text())["step"]
    assert saved == len(_metrics(out)) >= 3  # every logged step is in the checkpoint: none to redo
    subprocess.run([ALLINONE, *args, "--resume", "--max-steps", str(saved + 2)], check=True, capture_output=True)
    assert [m["step"] for m in _metrics(out)] == list(range(1, saved + 3))


def test_two_process_gloo_ddp(synth_corpus, tmp_path):
    out = tmp_path / "ddp"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "allinone.cli", "train", "--recipe", "tiny",
           "--train", str(synth_corpus / "train.jsonl"), "--dev", str(synth_corpus / "dev.jsonl"),
           "--out", str(out), "--max-steps", "3", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]  # one writer (rank 0), one line per step
    assert load_checkpoint(out).config["trained_steps"] == 3


@pytest.mark.parametrize("change, message", [
    ({"max_step": 10}, "unknown key 'max_step' \\(did you mean 'max_steps'\\?\\)"),
    ({"targets": ["d3-f128-h2-w32"]}, None),
    ({"model": "conformer_huge"}, "model: expected one of"),
    ({"systems_per_step": 1}, "systems_per_step: expected at least 2"),
    ({"units": "words"}, "units: expected one of \\['char', 'bpe'\\]"),
    ({"subsampling_factor": 5}, "subsampling_factor: expected one of"),
    ({"bf16": "yes"}, "bf16: expected one of"),
    ({"bpe_vocab_size": 8}, "bpe_vocab_size: expected an integer from 32"),
])
def test_bad_recipes_fail_before_training(synth_corpus, tmp_path, change, message):
    path = _recipe_file(tmp_path, **change)
    if message:
        with pytest.raises(BadInputError, match=message):
            load_recipe(path)
    else:
        with pytest.raises(BadInputError, match="depth=3 is not in the search space"):
            train(load_recipe(path), synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", tmp_path / "o",
                  progress=False)
        assert not (tmp_path / "o").exists()


def test_bad_manifests_and_mismatched_resume(synth_corpus, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BadInputError, match="no usable utterances"):
        train(load_recipe("tiny"), empty, synth_corpus / "dev.jsonl", tmp_path / "o", progress=False)
    with pytest.raises(BadInputError, match="not found"):
        train(load_recipe("tiny"), tmp_path / "missing.jsonl", synth_corpus / "dev.jsonl", tmp_path / "o", progress=False)
    with pytest.raises(BadInputError, match="no trainer_state.json to resume from"):
        train(load_recipe("tiny"), synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", tmp_path / "o",
              resume=True, progress=False)
    out = tmp_path / "run"
    train(load_recipe("tiny"), synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", out, max_steps=1, progress=False)
    other = recipe_from_dict({**load_recipe("tiny").to_dict(), "model": "conformer_small",
                              "targets": ["d12-f512-h4-w32", "d4-f128-h2-w4"]})
    with pytest.raises(BadInputError, match="architecture differs"):
        train(other, synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", out, resume=True, progress=False)
    with pytest.raises(BadInputError, match="recipe 'kl_weight' is 0.0, the run started with"):  # a forgotten --only
        train(load_recipe("tiny"), synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", out, resume=True,
              only="d1-f64-h1-w4", progress=False)
    fewer = tmp_path / "fewer.jsonl"
    rows = [json.loads(line) for line in (synth_corpus / "train.jsonl").read_text().splitlines() if line.strip()]
    fewer.write_text("".join(json.dumps({**r, "audio_filepath": str(synth_corpus / r["audio_filepath"])}) + "\n"
                             for r in rows[:-1]))
    with pytest.raises(BadInputError, match="the train manifest differs"):
        train(load_recipe("tiny"), fewer, synth_corpus / "dev.jsonl", out, resume=True, progress=False)
