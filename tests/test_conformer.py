"""The elastic Conformer supernet: nested systems, extraction, deployment numerics, gradients, bad input."""

import importlib.resources
import random

import pytest
import soundfile as sf
import torch

from allinone.errors import BadInputError
from allinone.models.conformer import ConformerConfig, conformer_medium, conformer_small, conformer_tiny
from allinone.size import subnet_size
from allinone.quantize import quantize_subnet_
from allinone.spec import SubnetSpec

VOCAB = 29


def _speech_batch():
    """Two rows of real speech: the whole clip and its first 60 %, zero-padded (B=2, lengths differ)."""
    path = importlib.resources.files("allinone") / "assets" / "sample.wav"
    audio = torch.from_numpy(sf.read(str(path), dtype="float32")[0])
    short = int(len(audio) * 0.6)
    batch = torch.zeros(2, len(audio))
    batch[0], batch[1, :short] = audio, audio[:short]
    return batch, torch.tensor([len(audio), short])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = conformer_tiny(VOCAB).eval()
    # A trained model's weights are not at init scale; perturb so quantization has real work to do.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_shapes_and_lengths(tiny):
    waveform, lengths = _speech_batch()
    log_probs, out_lengths = tiny(waveform, lengths, tiny.search_space.largest())
    frames = (lengths - 400) // 160 + 1
    expected = ((frames - 3) // 2 + 1 - 3) // 2 + 1
    assert torch.equal(out_lengths, expected)
    assert log_probs.shape == (2, int(expected.max()), VOCAB)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, log_probs.shape[1]), atol=1e-5)


def test_extracted_float_systems_equal_the_supernet(tiny):
    waveform, lengths = _speech_batch()
    for spec in [s for s in tiny.search_space.enumerate() if s.weight_bits == 32]:
        expected, expected_lengths = tiny(waveform, lengths, spec)
        subnet = tiny.extract_subnet(spec)
        got, got_lengths = subnet(waveform, lengths)
        assert torch.equal(got_lengths, expected_lengths)
        assert (got - expected).abs().max() < 1e-5, spec.id


def test_extracted_system_holds_only_kept_weights(tiny):
    spec = SubnetSpec(1, 64, 1, 32)
    subnet = tiny.extract_subnet(spec)
    assert len(subnet.blocks) == 1
    assert subnet.blocks[0].ffn1_up.weight.shape == (64, 64)
    assert subnet.blocks[0].q_proj.weight.shape == (32, 64)  # one head of 32
    assert subnet.blocks[0].out_proj.weight.shape == (64, 32)
    assert sum(p.numel() for p in subnet.parameters()) < sum(p.numel() for p in tiny.parameters())
    # Copies, not views: training the supernet later must not change an extracted system.
    assert subnet.blocks[0].ffn1_up.weight.data_ptr() != tiny.blocks[0].ffn1_up.weight.data_ptr()


def test_fake_quant_supernet_equals_torchao_quantized_extraction(tiny):
    """Training numerics are deployment numerics: torchao's quantize_ on the extracted system gives what the
    fake-quantized supernet computes (same primitives, same granularity).

    Not bit-exact: the extracted system computes LayerNorm and the GLU split in an export-friendly form
    whose float rounding differs by ~1e-7, and an activation sitting on an int8 rounding boundary can then
    land one step away. Such a flip moves a few log-probs by up to ~1e-2; a wrong scale, group size or
    mapping would move every frame by far more, so: max < 0.02, mean < 1e-3, same argmax everywhere."""
    waveform, lengths = _speech_batch()
    rng = random.Random(1)
    quantized = [s for s in tiny.search_space.enumerate() if s.is_quantized]
    for spec in rng.sample(quantized, 6) + [tiny.search_space.smallest()]:
        expected, _ = tiny(waveform, lengths, spec)
        subnet = tiny.extract_subnet(spec)
        left_float = quantize_subnet_(subnet, spec.weight_bits)
        assert set(left_float) >= {"subsampling.conv1", "subsampling.conv2"}  # convolutions stay float
        got, _ = subnet(waveform, lengths)
        diff = (got - expected).abs()
        assert diff.max() < 0.02 and diff.mean() < 1e-3, (spec.id, diff.max(), diff.mean())
        assert torch.equal(got.argmax(-1), expected.argmax(-1)), spec.id
        float_out, _ = tiny(waveform, lengths, spec.with_bits(32))
        assert (float_out - expected).abs().max() > 1e-3  # quantization really happened


def test_padding_does_not_change_a_row(tiny):
    waveform, lengths = _speech_batch()
    spec = tiny.search_space.largest()
    batched, out_lengths = tiny(waveform, lengths, spec)
    alone, _ = tiny(waveform[1:, : int(lengths[1])], lengths[1:], spec)
    t = int(out_lengths[1])
    assert (batched[1, :t] - alone[0, :t]).abs().max() < 1e-4


@pytest.mark.parametrize("bits", [8, 4])
def test_gradients_reach_shared_float_weights_through_quantization(tiny, bits):
    model = conformer_tiny(VOCAB).train()
    waveform, lengths = _speech_batch()
    spec = SubnetSpec(1, 64, 1, bits)
    log_probs, _ = model(waveform, lengths, spec)
    log_probs.sum().backward()
    grad = model.blocks[0].ffn1_up.weight.grad
    assert grad is not None and grad[:64].abs().sum() > 0
    assert grad[64:].abs().sum() == 0  # units outside the kept width get no gradient
    assert model.blocks[1].ffn1_up.weight.grad is None  # the dropped block is not used


def test_small_factory_size_and_widths():
    model = conformer_small(VOCAB)
    params = sum(p.numel() for p in model.parameters())
    assert 4_000_000 < params < 11_000_000
    assert len(model.search_space.enumerate()) == 5 * 4 * 3 * 3


@pytest.mark.parametrize("factor", [6, 8])
def test_coarser_frame_rates_keep_lengths_and_extraction_exact(factor):
    torch.manual_seed(0)
    model = conformer_tiny(VOCAB, subsampling_factor=factor).eval()
    waveform, lengths = _speech_batch()
    frames = (lengths - 400) // 160 + 1
    expected = (frames - 3) // 2 + 1
    for stride in ((3,) if factor == 6 else (2, 2)):
        expected = (expected - 3) // stride + 1
    spec = model.search_space.largest()
    log_probs, out_lengths = model(waveform, lengths, spec)
    assert torch.equal(out_lengths, expected) and log_probs.shape[1] == int(expected.max())
    assert model.frame_shift_s == pytest.approx(0.01 * factor)
    got, got_lengths = model.extract_subnet(spec)(waveform, lengths)
    assert torch.equal(got_lengths, out_lengths) and (got - log_probs).abs().max() < 1e-5
    shared, shared_lengths = model.front(waveform, lengths)  # what a training step computes once
    again, _ = model.forward_front(shared, shared_lengths, spec)
    assert torch.equal(again, log_probs)


def test_medium_factory_is_five_times_small_and_its_smallest_a_tenth_of_its_largest():
    medium, small = conformer_medium(VOCAB), conformer_small(VOCAB)
    largest = subnet_size(medium, medium.search_space.largest()).macs_per_second
    smallest = subnet_size(medium, medium.search_space.smallest()).macs_per_second
    assert largest >= 5 * subnet_size(small, small.search_space.largest()).macs_per_second
    assert largest >= 10 * smallest
    assert medium.frame_shift_s == pytest.approx(0.04)


def test_config_refuses_widths_4bit_kernels_cannot_take():
    with pytest.raises(BadInputError, match="d_model = 144 is not a multiple of 32"):
        ConformerConfig(vocab_size=VOCAB, d_model=144, n_heads=4)
    assert ConformerConfig.from_dict(ConformerConfig(vocab_size=VOCAB).to_dict()) == ConformerConfig(vocab_size=VOCAB)
    with pytest.raises(BadInputError, match="subsampling_factor must be one of"):
        ConformerConfig(vocab_size=VOCAB, subsampling_factor=5)


def test_bad_inputs_give_clear_errors(tiny):
    spec = tiny.search_space.largest()
    ok = torch.zeros(1, 16000)
    with pytest.raises(BadInputError, match=r"waveform: expected a \(batch, samples\) tensor, got shape \(16000,\)"):
        tiny(torch.zeros(16000), None, spec)
    with pytest.raises(BadInputError, match="expected float32 samples"):
        tiny(ok.double(), None, spec)
    with pytest.raises(BadInputError, match="longer than the input"):
        tiny(ok, torch.tensor([20000]), spec)
    with pytest.raises(BadInputError, match="shorter than the minimum"):
        tiny(ok, torch.tensor([4000]), spec)
    with pytest.raises(BadInputError, match="depth=3 is not in the search space"):
        tiny(ok, None, SubnetSpec(3, 64, 1, 32))
    with pytest.raises(BadInputError, match="ffn_dim=96 is not in the search space"):
        tiny.extract_subnet(SubnetSpec(1, 96, 1, 8))


def test_zero_init_residual_starts_every_depth_as_the_same_function():
    """After zero_init_residual, a deeper system starts where a shallower one is (on real speech), and a
    training step moves the deep blocks' branches off zero (they still learn)."""
    torch.manual_seed(0)
    model = conformer_tiny(VOCAB)
    model.zero_init_residual()
    waveform, lengths = _speech_batch()
    shallow, deep = (SubnetSpec(d, 128, 2, 32) for d in (1, 2))
    model.eval()
    with torch.no_grad():
        lp1, _ = model(waveform, lengths, shallow)
        lp2, _ = model(waveform, lengths, deep)
    assert torch.allclose(lp1, lp2, atol=1e-4)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # the first step moves the branch outputs; the second reaches the branch inputs
        log_probs, out_lengths = model(waveform, lengths, deep)
        targets = torch.randint(1, VOCAB, (2, 5))
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, torch.tensor([5, 5]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    block = model.blocks[1]
    assert block.ffn2_down.weight.abs().sum() > 0 and block.ffn2_up.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tiny_prenorm():
    """conformer_tiny with pre-norm blocks and one final LayerNorm (conformer_medium's block layout)."""
    torch.manual_seed(0)
    model = conformer_tiny_prenorm().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def conformer_tiny_prenorm():
    from dataclasses import replace

    from allinone.models.conformer import ConformerSupernet
    return ConformerSupernet(replace(conformer_tiny(VOCAB).cfg, block_output_norm=False))


def test_prenorm_systems_extract_exactly_and_hold_one_final_norm(tiny_prenorm):
    waveform, lengths = _speech_batch()
    for spec in [s for s in tiny_prenorm.search_space.enumerate() if s.weight_bits == 32]:
        expected, _ = tiny_prenorm(waveform, lengths, spec)
        got, _ = tiny_prenorm.extract_subnet(spec)(waveform, lengths)
        assert (got - expected).abs().max() < 1e-5, spec.id
    keys = tiny_prenorm.state_dict().keys()
    assert "final_norm.weight" in keys and not any("out_norm" in k for k in keys)
    # The final norm is what every depth ends with: changing it changes every system's output.
    spec = tiny_prenorm.search_space.smallest()
    before, _ = tiny_prenorm(waveform, lengths, spec)
    with torch.no_grad():
        tiny_prenorm.final_norm.weight.mul_(2.0)
        after, _ = tiny_prenorm(waveform, lengths, spec)
        tiny_prenorm.final_norm.weight.mul_(0.5)
    assert (after - before).abs().max() > 1e-2


def test_configs_written_before_the_block_layout_key_read_as_post_norm():
    data = ConformerConfig(vocab_size=VOCAB).to_dict()
    del data["block_output_norm"]
    assert ConformerConfig.from_dict(data).block_output_norm is True
    assert conformer_medium(VOCAB).cfg.block_output_norm is False
