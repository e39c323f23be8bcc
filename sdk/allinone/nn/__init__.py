"""Elastic layers (full-size weights sliced per spec) and fake quantization with deployment numerics."""

from allinone.nn.elastic import ElasticLinear
from allinone.nn.quant import fake_quantize_activation, fake_quantize_weight, torchao_config

__all__ = ["ElasticLinear", "fake_quantize_activation", "fake_quantize_weight", "torchao_config"]
