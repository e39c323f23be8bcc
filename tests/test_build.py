"""End to end: a trained tiny checkpoint -> catalog -> bundles for two profiles -> .pte transcribes speech
exactly like the eager model; plus the build's refusals and exit codes."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from executorch.runtime import Runtime

from allinone.build import sample_audio
from allinone.checkpoint import load_checkpoint
from allinone.spec import SubnetSpec
from conftest import SAMPLE_TEXT, board_profile, clip_catalog_checkpoint
from conftest import run_allinone as _run

FLOAT_ONLY_PROFILE = board_profile("float-only-board", "a test board whose runtime has no integer kernels")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The trained tiny fixture with a catalog measured on the clip it learned."""
    return clip_catalog_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _transcribe(pte: Path, tokenizer) -> str:
    program = Runtime.get().load_program(pte.read_bytes())  # keep the program alive while its method runs
    return tokenizer.decode_ctc(program.load_method("forward").execute([sample_audio()])[0][0].argmax(-1).tolist())


def test_build_two_profiles_transcribe_like_eager(checkpoint, tmp_path):
    board = tmp_path / "float-only-board.yaml"
    board.write_text(FLOAT_ONLY_PROFILE)
    dist = tmp_path / "dist"
    proc = _run("build", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", "--profile", str(board),
                "--out", str(dist), "--json")
    report = json.loads(proc.stdout)
    assert report["failures"] == []
    bundles = {b["profile"]: b for b in report["bundles"]}
    assert set(bundles) == {"host-x86_64", "float-only-board"}
    assert SubnetSpec.from_id(bundles["float-only-board"]["subnet"]).weight_bits == 32

    ckpt = load_checkpoint(checkpoint)
    tokenizer = ckpt.tokenizer()
    for name, info in bundles.items():
        bundle = Path(info["path"])
        assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.pte"]
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["pte"]["sha256"] == info["sha256"] and manifest["profile"]["name"] == name
        assert manifest["sizes"]["pte_bytes"] == (bundle / "model.pte").stat().st_size == info["pte_bytes"]
        assert manifest["latency"]["predicted"]["measured"] is False and manifest["latency"]["measured"] is None
        spec = SubnetSpec.from_id(info["subnet"])
        eager = ckpt.model.extract_subnet(spec)
        from allinone.quantize import quantize_subnet_

        quantize_subnet_(eager, spec.weight_bits)
        with torch.no_grad():
            eager_text = tokenizer.decode_ctc(eager(sample_audio(), None)[0][0].argmax(-1).tolist())
        assert _transcribe(bundle / "model.pte", tokenizer) == eager_text == SAMPLE_TEXT
        assert manifest["verification"]["transcript"] == SAMPLE_TEXT
        check = manifest["verification"]
        assert 0 <= check["flipped_frames"] <= 0.01 * check["frames"] and "eager_transcript" not in check

    # Verification catches a .pte that is not the eager program: the host bundle's program against the eager
    # float system of another depth.
    from allinone.build import verify_program
    from allinone.errors import VerificationError

    host = SubnetSpec.from_id(bundles["host-x86_64"]["subnet"])
    other = ckpt.model.extract_subnet(next(s for s in ckpt.model.search_space.enumerate()
                                           if s.depth != host.depth and s.weight_bits == 32))
    with pytest.raises(VerificationError, match="greedy tokens differ on"):
        verify_program((dist / "host-x86_64" / "model.pte").read_bytes(), lambda w: other(w, None)[0], tokenizer,
                       host.weight_bits)

    inspect = _run("inspect", str(dist / "host-x86_64")).stdout
    assert bundles["host-x86_64"]["subnet"] in inspect and "delegated to XNNPACK" in inspect

    again = _run("build", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", "--out", str(dist), check=False)
    assert again.returncode == 2 and "already exists (pass --force" in again.stderr


def test_no_fit_profile_exits_3_and_writes_nothing(checkpoint, tmp_path):
    tight = tmp_path / "tight.yaml"
    tight.write_text(FLOAT_ONLY_PROFILE.replace("name: float-only-board", "name: tight")
                     .replace("max_model_mib: 64", "max_model_mib: 0.1"))
    dist = tmp_path / "dist"
    proc = _run("build", "--checkpoint", str(checkpoint), "--profile", str(tight), "--out", str(dist), check=False)
    assert proc.returncode == 3, proc.stderr
    assert "tight" in proc.stderr and not (dist / "tight").exists()


@pytest.mark.parametrize("damage, message", [
    ("version", "format_version 99 is not supported"),
    ("weights", "sha256 does not match config.json"),
    ("missing", "missing model.safetensors"),
])
def test_damaged_checkpoints_are_refused(checkpoint, tmp_path, damage, message):
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    if damage == "version":
        config = json.loads((bad / "config.json").read_text())
        (bad / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    elif damage == "weights":
        data = bytearray((bad / "model.safetensors").read_bytes())
        data[-10] ^= 0xFF
        (bad / "model.safetensors").write_bytes(bytes(data))
    else:
        (bad / "model.safetensors").unlink()
    proc = _run("export", "--checkpoint", str(bad), "--subnet", "d1-f64-h1-w4", "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "b").exists()


def test_unknown_profile_is_refused_before_lowering(checkpoint, tmp_path):
    proc = _run("build", "--checkpoint", str(checkpoint), "--profile", "pixel-9000", "--out", str(tmp_path / "d"),
                check=False)
    assert proc.returncode == 2 and "pixel-9000" in proc.stderr
