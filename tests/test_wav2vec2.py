"""wav2vec2.0: import parity with transformers, importance reordering, nested systems lowered to .pte, and
all-in-one fine-tuning of an imported model through build and the runtime (issue 8)."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from executorch.runtime import Runtime

from allinone.build import MAX_ABS_DIFF, export_bundle, sample_audio
from allinone.checkpoint import load_checkpoint
from allinone.cli import main
from allinone.export import export_subnet
from allinone.hf_import import import_hf
from allinone.spec import SubnetSpec

transformers = pytest.importorskip("transformers")

ALLINONE = str(Path(sys.executable).with_name("allinone"))
# A typical English Wav2Vec2CTCTokenizer vocabulary (upper-case letters, `|` between words); the pad token (the
# CTC blank) is put last so the import must move it to index 0.
TOKENS = ["<s>", "</s>", "<unk>", "|", "'", *string.ascii_uppercase, "<pad>"]


def _hf_model(directory: Path, *, stable: bool = False, safetensors: bool = True, seed: int = 0):
    """A small randomly initialised Wav2Vec2ForCTC saved as a Hugging Face folder; returns the model."""
    torch.manual_seed(seed)
    config = transformers.Wav2Vec2Config(
        vocab_size=len(TOKENS), pad_token_id=TOKENS.index("<pad>"), hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group",
        conv_bias=stable)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up of them cannot pass unnoticed
        for name, param in model.named_parameters():
            if "bias" in name or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    if not safetensors:  # an older checkpoint: a pickled state dict (transformers 5 writes safetensors only)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
        (directory / "model.safetensors").unlink()
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TOKENS)}))
    (directory / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return model


def _hf_log_probs(model, waveform: torch.Tensor, order: list[int]) -> torch.Tensor:
    """transformers' log-probs of `waveform`, normalised as its feature extractor does, in allinone's vocab order."""
    x = (waveform - waveform.mean()) / torch.sqrt(waveform.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        return torch.log_softmax(model(x).logits, dim=-1)[..., order]


@pytest.mark.parametrize("stable", [False, True], ids=["post-norm-group", "pre-norm-layer"])
def test_import_matches_transformers_on_real_speech(tmp_path, stable):
    hf = _hf_model(tmp_path / "hf", stable=stable)
    import_hf(tmp_path / "hf", tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.family == "wav2vec2" and ckpt.model.cfg.do_stable_layer_norm == stable
    vocab = ckpt.config["vocabulary"]["vocab"]
    assert vocab[:6] == ["<blank>", "<s>", "</s>", "<unk>", " ", "'"] and vocab[6:] == list(string.ascii_lowercase)
    assert ckpt.model.cfg.frontend.do_normalize

    waveform = sample_audio()
    expected = _hf_log_probs(hf, waveform, ckpt.config["hf_import"]["hf_vocab_order"])
    with torch.no_grad():
        got, lengths = ckpt.model(waveform, None, ckpt.model.search_space.largest())
    assert got.shape == expected.shape and int(lengths[0]) == got.shape[1]
    assert (got - expected).abs().max() < 1e-4

    # A padded batch row gives what the utterance gives alone (masked norm statistics, masked attention).
    short = waveform[:, :20000]
    batch = torch.cat([waveform, torch.nn.functional.pad(short, (0, waveform.shape[1] - 20000))])
    with torch.no_grad():
        padded, out_lengths = ckpt.model(batch, torch.tensor([waveform.shape[1], 20000]),
                                         ckpt.model.search_space.largest())
        alone, _ = ckpt.model(short, None, ckpt.model.search_space.largest())
    assert (padded[1, : int(out_lengths[1])] - alone[0]).abs().max() < 1e-4


def test_importance_reordering_keeps_the_full_system_and_sorts_units(tmp_path):
    _hf_model(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "sorted")
    import_hf(tmp_path / "hf", tmp_path / "plain", reorder=False)
    sorted_, plain = load_checkpoint(tmp_path / "sorted").model, load_checkpoint(tmp_path / "plain").model
    waveform, largest = sample_audio(), sorted_.search_space.largest()
    narrow = SubnetSpec(2, 32, 1, 32)
    with torch.no_grad():
        assert (sorted_(waveform, None, largest)[0] - plain(waveform, None, largest)[0]).abs().max() < 1e-5
        assert (sorted_(waveform, None, narrow)[0] - plain(waveform, None, narrow)[0]).abs().max() > 1e-3
    for layer in sorted_.layers:
        score = layer.ffn_up.weight.norm(dim=1) * layer.ffn_down.weight.norm(dim=0)
        assert torch.all(score[:-1] >= score[1:])
    assert load_checkpoint(tmp_path / "sorted").config["hf_import"]["reordered_by_importance"]


def test_pytorch_model_bin_and_clear_errors(tmp_path, capsys):
    hf = _hf_model(tmp_path / "bin", safetensors=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    assert main(["import-hf", str(tmp_path / "bin"), "--out", str(tmp_path / "ckpt"), "--depths", "1,2"]) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.model.search_space.depths == (1, 2)
    expected = _hf_log_probs(hf, sample_audio(), ckpt.config["hf_import"]["hf_vocab_order"])
    with torch.no_grad():
        assert (ckpt.model(sample_audio(), None, ckpt.model.search_space.largest())[0] - expected).abs().max() < 1e-4

    _hf_model(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    cases = {
        "not-ctc": ({**config, "architectures": ["Wav2Vec2Model"]}, None, "expected a wav2vec2 model saved as Wav2Vec2ForCTC"),
        "hubert": ({**config, "model_type": "hubert"}, None, "model_type 'hubert'"),
        "adapter": ({**config, "add_adapter": True}, None, "add_adapter=True is not supported"),
        "act": ({**config, "hidden_act": "swish"}, None, "hidden_act 'swish' is not supported"),
        "no-weights": (config, "model.safetensors", "missing weights"),
        "no-vocab": (config, "vocab.json", "vocab.json: missing"),
    }
    capsys.readouterr()  # drop transformers' own progress output
    for name, (cfg, remove, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for f in (tmp_path / "hf").iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / "config.json").write_text(json.dumps(cfg))
        if remove:
            (folder / remove).unlink()
        assert main(["import-hf", str(folder), "--out", str(tmp_path / f"out-{name}")]) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (name, err)
        assert not (tmp_path / f"out-{name}").exists()


def test_nested_systems_lower_to_pte_like_the_supernet(tmp_path):
    _hf_model(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "ckpt")
    model = load_checkpoint(tmp_path / "ckpt").model
    waveform = sample_audio()
    for spec in (SubnetSpec(2, 128, 2, 32), SubnetSpec(1, 32, 1, 4)):  # 8-bit: the train test builds one
        program = export_subnet(model, spec)
        assert all(".convs." in n or "pos_conv" in n for n in program.float_layers)  # linears all quantized
        loaded = Runtime.get().load_program(program.pte)  # keep the program alive while its method runs
        method = loaded.load_method("forward")
        for n in (waveform.shape[1], 12345):  # dynamic length
            got = method.execute([waveform[:, :n].contiguous()])[0]
            with torch.no_grad():
                eager = program.module(waveform[:, :n])
                supernet = model(waveform[:, :n], None, spec)[0]
            assert got.shape == eager.shape == supernet.shape
            assert (got - eager).abs().max() <= MAX_ABS_DIFF[spec.weight_bits], spec.id
            # Fake quantization in the supernet is the deployed numerics.
            assert (got - supernet).abs().max() <= MAX_ABS_DIFF[spec.weight_bits], spec.id


def test_train_from_import_then_build_and_transcribe(synth_corpus, tmp_path):
    from allinone_runtime import Transcriber

    _hf_model(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "imported")
    out = tmp_path / "aio"
    proc = subprocess.run([ALLINONE, "train", "--init", str(tmp_path / "imported"), "--recipe", "wav2vec2_tiny",
                           "--train", str(synth_corpus / "train.jsonl"), "--dev", str(synth_corpus / "dev.jsonl"),
                           "--out", str(out), "--max-steps", "3", "--no-progress"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(len(m["ctc"]) == 3 for m in metrics)
    ckpt = load_checkpoint(out)
    imported = load_checkpoint(tmp_path / "imported").config
    assert ckpt.family == "wav2vec2" and ckpt.config["vocabulary"] == imported["vocabulary"]
    assert ckpt.config["hf_import"] == imported["hf_import"]  # where the weights came from survives training
    assert ckpt.config["init"] == {"path": str(tmp_path / "imported"), "weights_sha256": imported["weights_sha256"]}

    bundle = export_bundle(ckpt, "d2-f128-h2-w8", tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["family"] == "wav2vec2" and manifest["io"]["output"]["frame_shift_s"] == 0.02
    transcript = Transcriber(bundle).transcribe(str(Path(__file__).parents[1] / "sdk/allinone/assets/sample.wav"))
    assert transcript.text == manifest["verification"]["transcript"]  # the runtime decodes from the manifest alone
