"""Size accounting against the bytes a torchao-quantized system actually serializes."""

import io

import pytest
import torch
from safetensors.torch import save
from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

from allinone.models.conformer import conformer_tiny
from allinone.quantize import quantize_subnet_
from allinone.size import module_weight_bytes, subnet_size
from allinone.spec import SubnetSpec


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int8-held int4 values -> two per byte (what a deployed 4-bit weight occupies)."""
    flat = (values.flatten().to(torch.int16) & 0xF).to(torch.uint8)
    return flat[0::2] | (flat[1::2] << 4)


def _serialized_tensor_bytes(module: torch.nn.Module, bits: int) -> int:
    """Serialize every stored tensor of a quantized module with safetensors; return the tensor payload bytes."""
    tensors = {}
    for name, value in list(module.named_parameters()) + list(module.named_buffers()):
        if isinstance(value, IntxUnpackedToInt8Tensor):
            assert torch.count_nonzero(value.zero_point) == 0  # symmetric: zero-points need not be stored
            tensors[name + ".qdata"] = _pack_int4(value.qdata) if bits == 4 else value.qdata.contiguous()
            tensors[name + ".scale"] = value.scale.contiguous()  # as stored: float32 (8-bit), bfloat16 (4-bit)
        else:
            tensors[name] = value.detach().contiguous()
    blob = save(tensors)
    header = 8 + int.from_bytes(blob[:8], "little")  # safetensors: u64 header size, JSON header, payload
    return len(blob) - header


@pytest.mark.parametrize("spec", [SubnetSpec(2, 128, 2, 32), SubnetSpec(2, 128, 2, 8),
                                  SubnetSpec(1, 64, 1, 4), SubnetSpec(2, 128, 2, 4)], ids=lambda s: s.id)
def test_weight_bytes_match_serialized_quantized_module(spec):
    model = conformer_tiny(29).eval()
    size = subnet_size(model, spec)
    subnet = model.extract_subnet(spec)
    quantize_subnet_(subnet, spec.weight_bits)
    assert size.weight_bytes == _serialized_tensor_bytes(subnet, spec.weight_bits)
    assert size.params == sum(p.numel() for p in model.extract_subnet(spec).parameters())


def test_sizes_order_by_precision_and_width():
    model = conformer_tiny(29).eval()
    full = subnet_size(model, SubnetSpec(2, 128, 2, 32))
    w8, w4 = subnet_size(model, SubnetSpec(2, 128, 2, 8)), subnet_size(model, SubnetSpec(2, 128, 2, 4))
    narrow = subnet_size(model, SubnetSpec(1, 64, 1, 32))
    assert full.weight_bytes > w8.weight_bytes > w4.weight_bytes
    assert full.params == w8.params == w4.params > narrow.params
    assert full.macs_per_second == w4.macs_per_second > narrow.macs_per_second > 0


def test_macs_follow_a_hand_count_for_one_linear_system():
    """MACs/s of the float frontend alone is fixed by its DFT and mel matmuls; check the counter against it."""
    model = conformer_tiny(29).eval()
    size = subnet_size(model, SubnetSpec(1, 64, 1, 32))
    frames_per_s = (160000 - 400) // 160 + 1  # 10 s reference
    frontend_macs = frames_per_s * (402 * 400 + 201 * 80) / 10
    assert size.macs_per_second > frontend_macs
    assert module_weight_bytes(model.extract_subnet(SubnetSpec(1, 64, 1, 32)), 32) == size.weight_bytes


def test_one_quant_scheme_per_precision_drives_quantization_sizes_and_manifest():
    """The group size, scale dtype and activation scheme are stated once, in QuantScheme, and read by the
    torchao config, the size accounting and the manifest's quantization block."""
    from torchao.quantization.granularity import PerAxis, PerGroup

    from allinone.nn.quant import torchao_config
    from allinone.package import quantization_info
    from allinone.quant_scheme import INT4_WEIGHTS, QuantScheme

    assert SubnetSpec(1, 64, 1, 4).quant_scheme == INT4_WEIGHTS == QuantScheme.for_bits(4)
    assert quantization_info(QuantScheme.for_bits(32), ["ignored"]) == {
        "weight_bits": 32, "scheme": "fp32", "weight_granularity": None, "group_size": None,
        "activations": "float32", "float_layers": []}
    assert quantization_info(QuantScheme.for_bits(8), ["conv"]) == {
        "weight_bits": 8, "scheme": "8da8w", "weight_granularity": "per_channel", "group_size": None,
        "activations": "dynamic int8 per token, asymmetric", "float_layers": ["conv"]}
    assert quantization_info(INT4_WEIGHTS, []) == {
        "weight_bits": 4, "scheme": "8da4w", "weight_granularity": "per_group", "group_size": 32,
        "activations": "dynamic int8 per token, asymmetric", "float_layers": []}
    config = torchao_config(INT4_WEIGHTS)
    assert config.weight_granularity == PerGroup(32) and config.weight_scale_dtype == torch.bfloat16
    assert torchao_config(8).weight_granularity == PerAxis(0) and torchao_config(8).weight_scale_dtype is None
    linear = torch.nn.Linear(64, 10, bias=False)  # 640 weights: 320 bytes at 4 bits + 10 x 2 groups x 2 B (bf16)
    assert module_weight_bytes(linear, INT4_WEIGHTS) == 320 + 40 == module_weight_bytes(linear, 4)
    assert module_weight_bytes(linear, 8) == 640 + 10 * 4
    with pytest.raises(ValueError, match="16-bit"):
        QuantScheme.for_bits(16)
