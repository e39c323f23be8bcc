"""`QuantScheme`: how a nested system's weights are stored and its quantized linears run on the device.

One value per weight precision, read by fake quantization (`allinone.nn.quant`), deployment quantization
(`allinone.quantize`), size accounting (`allinone.size`) and the bundle manifest (`allinone.package`), so the
group size, the scales' dtype and the activation scheme are stated once. Plain data, no torch: the manifest
writer and selection may read it without importing the quantization stack.

The deployed numerics (torchao `Int8DynamicActivationIntxWeightConfig`, lowered to XNNPACK):
  * 8-bit weights: symmetric int8, one float32 scale per output channel;
  * 4-bit weights: symmetric int4, one bfloat16 scale per group of 32 input features (XNNPACK's blockwise
    kernels store group scales in bfloat16 and need a group size that is a multiple of 32);
  * activations of a quantized linear: dynamic asymmetric int8, one scale and zero-point per token.
Symmetric weights store no zero-points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["QuantScheme", "FLOAT32", "INT8_WEIGHTS", "INT4_WEIGHTS", "GROUP_SIZE_INT4", "DYNAMIC_INT8_ACTIVATIONS"]

DYNAMIC_INT8_ACTIVATIONS = "dynamic int8 per token, asymmetric"  # as the manifest states it
_SCALE_BYTES = {"float32": 4, "bfloat16": 2}
_QRANGE = {8: (-128, 127), 4: (-8, 7)}


@dataclass(frozen=True)
class QuantScheme:
    """The storage and arithmetic of one weight precision. `group_size` None with integer weights means one
    scale per output channel (the whole input row shares it)."""

    weight_bits: int  # 32 (float), 8 or 4
    group_size: int | None  # input features sharing one weight scale; None: per output channel (or float)
    scale_dtype: str | None  # how the kernels store weight scales: "float32" or "bfloat16"; None for float
    activations: str  # "float32", or DYNAMIC_INT8_ACTIVATIONS for integer weights

    @classmethod
    def for_bits(cls, bits: int) -> QuantScheme:
        """The deployed scheme of `bits`-bit weights (32, 8 or 4)."""
        try:
            return _SCHEMES[bits]
        except (KeyError, TypeError):
            raise ValueError(f"no quantization scheme for {bits!r}-bit weights (expected 32, 8 or 4)") from None

    @classmethod
    def of(cls, scheme: QuantScheme | int) -> QuantScheme:
        """`scheme` itself, or the deployed scheme of that many bits (callers holding a SubnetSpec's bits)."""
        return scheme if isinstance(scheme, QuantScheme) else cls.for_bits(scheme)

    @property
    def is_quantized(self) -> bool:
        return self.weight_bits < 32

    @property
    def name(self) -> str:
        """Short name, as optimum-executorch spells them: fp32, 8da8w, 8da4w (8-bit dynamic activations)."""
        return f"8da{self.weight_bits}w" if self.is_quantized else "fp32"

    @property
    def granularity(self) -> str | None:
        if not self.is_quantized:
            return None
        return "per_channel" if self.group_size is None else "per_group"

    @property
    def qrange(self) -> tuple[int, int]:
        """(quant_min, quant_max) of the stored integer weights."""
        return _QRANGE[self.weight_bits]

    @property
    def scale_bytes(self) -> int:
        """Bytes of one stored weight scale."""
        return _SCALE_BYTES[self.scale_dtype]

    def block_size(self, in_features: int) -> tuple[int, int]:
        """Block of an (out, in) weight over which one scale is shared: a whole row, or one group of inputs."""
        return (1, in_features) if self.group_size is None else (1, self.group_size)

    def takes_width(self, in_features: int) -> bool:
        """True if a linear reading `in_features` inputs can hold weights of this scheme on XNNPACK (group-wise
        weights need the width to be a multiple of the group size); float takes every width."""
        return self.group_size is None or in_features % self.group_size == 0

    def scale_count(self, out_features: int, in_features: int) -> int:
        """Weight scales a quantized (out, in) linear stores."""
        return out_features if self.group_size is None else out_features * (in_features // self.group_size)

    def to_manifest(self, float_layers: list[str]) -> dict[str, Any]:
        """The bundle manifest's `quantization` block; `float_layers` are the weight layers left in float."""
        return {"weight_bits": self.weight_bits, "scheme": self.name, "weight_granularity": self.granularity,
                "group_size": self.group_size, "activations": self.activations,
                "float_layers": list(float_layers) if self.is_quantized else []}


FLOAT32 = QuantScheme(32, None, None, "float32")
INT8_WEIGHTS = QuantScheme(8, None, "float32", DYNAMIC_INT8_ACTIVATIONS)
INT4_WEIGHTS = QuantScheme(4, 32, "bfloat16", DYNAMIC_INT8_ACTIVATIONS)
_SCHEMES = {s.weight_bits: s for s in (FLOAT32, INT8_WEIGHTS, INT4_WEIGHTS)}
GROUP_SIZE_INT4 = INT4_WEIGHTS.group_size  # what every width a 4-bit linear reads must be a multiple of
