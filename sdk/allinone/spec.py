"""Nested-system specs: which part of the all-in-one supernet a system keeps.

A `SubnetSpec` is plain data (depth, feed-forward width, attention heads, weight bits); a `SearchSpace`
lists the values a supernet allows. Neither holds model state: `model(waveform, lengths, spec)` runs a spec.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import asdict, dataclass

from allinone.errors import BadInputError
from allinone.quant_scheme import QuantScheme

__all__ = ["SubnetSpec", "SearchSpace", "SPEC_FORMAT_VERSION", "ALLOWED_WEIGHT_BITS"]

SPEC_FORMAT_VERSION = 1
ALLOWED_WEIGHT_BITS = (32, 8, 4)  # 32 = float weights; 8 and 4 = integer weights with dynamic int8 activations
_ID_PATTERN = re.compile(r"^d(\d+)-f(\d+)-h(\d+)-w(\d+)$")


@dataclass(frozen=True, order=True)
class SubnetSpec:
    """One nested system: keep the first `depth` encoder blocks, the leading `ffn_dim` feed-forward units and
    the leading `heads` attention heads of every kept block, and store weights at `weight_bits`."""

    depth: int  # encoder blocks kept (the first ones)
    ffn_dim: int  # feed-forward hidden units kept per block (the leading ones)
    heads: int  # attention heads kept per block (the leading ones)
    weight_bits: int  # 32 (float), 8 (int8 per output channel) or 4 (int4 per group of 32 inputs)

    def __post_init__(self) -> None:
        for name in ("depth", "ffn_dim", "heads", "weight_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"subnet spec: {name} must be a positive integer, got {value!r}")
        if self.weight_bits not in ALLOWED_WEIGHT_BITS:
            raise BadInputError(
                f"subnet spec: weight_bits must be one of {ALLOWED_WEIGHT_BITS}, got {self.weight_bits}")

    @property
    def id(self) -> str:
        """Stable string id, e.g. `d12-f512-h4-w4`; `SubnetSpec.from_id` reverses it."""
        return f"d{self.depth}-f{self.ffn_dim}-h{self.heads}-w{self.weight_bits}"

    @property
    def is_quantized(self) -> bool:
        return self.weight_bits < 32

    @property
    def quant_scheme(self) -> QuantScheme:
        """How this system's weights are stored and run: the deployed scheme of its weight bits."""
        return QuantScheme.for_bits(self.weight_bits)

    def with_bits(self, weight_bits: int) -> "SubnetSpec":
        return SubnetSpec(self.depth, self.ffn_dim, self.heads, weight_bits)

    @classmethod
    def from_id(cls, spec_id: str) -> "SubnetSpec":
        match = _ID_PATTERN.match(spec_id.strip()) if isinstance(spec_id, str) else None
        if match is None:
            raise BadInputError(
                f"subnet id {spec_id!r}: expected the form d<depth>-f<ffn_dim>-h<heads>-w<bits>, e.g. d12-f512-h4-w8")
        return cls(*(int(g) for g in match.groups()))

    def to_dict(self) -> dict:
        return {"format_version": SPEC_FORMAT_VERSION, "id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "SubnetSpec":
        if not isinstance(data, dict):
            raise BadInputError(f"subnet spec: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version", SPEC_FORMAT_VERSION)
        if version != SPEC_FORMAT_VERSION:
            raise BadInputError(f"subnet spec: format_version {version!r} is not supported (expected {SPEC_FORMAT_VERSION})")
        missing = [k for k in ("depth", "ffn_dim", "heads", "weight_bits") if k not in data]
        if missing:
            raise BadInputError(f"subnet spec: missing key(s) {', '.join(missing)}")
        spec = cls(data["depth"], data["ffn_dim"], data["heads"], data["weight_bits"])
        if "id" in data and data["id"] != spec.id:
            raise BadInputError(f"subnet spec: id {data['id']!r} does not match its fields ({spec.id})")
        return spec


def _sorted_unique(name: str, values) -> tuple[int, ...]:
    values = tuple(sorted(set(int(v) for v in values)))
    if not values:
        raise BadInputError(f"search space: {name} needs at least one value")
    return values


@dataclass(frozen=True)
class SearchSpace:
    """The values a supernet allows for each spec field; every combination is a nested system."""

    depths: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    heads: tuple[int, ...]
    weight_bits: tuple[int, ...] = ALLOWED_WEIGHT_BITS

    def __post_init__(self) -> None:
        for name in ("depths", "ffn_dims", "heads", "weight_bits"):
            object.__setattr__(self, name, _sorted_unique(name, getattr(self, name)))
        bad_bits = [b for b in self.weight_bits if b not in ALLOWED_WEIGHT_BITS]
        if bad_bits:
            raise BadInputError(f"search space: weight_bits {bad_bits} not in {ALLOWED_WEIGHT_BITS}")

    def __contains__(self, spec: SubnetSpec) -> bool:
        return (spec.depth in self.depths and spec.ffn_dim in self.ffn_dims
                and spec.heads in self.heads and spec.weight_bits in self.weight_bits)

    def validate(self, spec: SubnetSpec) -> SubnetSpec:
        """Return `spec` if the supernet can run it, else raise one clear error naming the bad field."""
        for field, allowed in (("depth", self.depths), ("ffn_dim", self.ffn_dims),
                               ("heads", self.heads), ("weight_bits", self.weight_bits)):
            value = getattr(spec, field)
            if value not in allowed:
                raise BadInputError(f"subnet {spec.id}: {field}={value} is not in the search space (allowed: {list(allowed)})")
        return spec

    def enumerate(self) -> list[SubnetSpec]:
        """Every nested system, smallest first (ordered by depth, width, heads, bits)."""
        return [SubnetSpec(d, f, h, b) for d, f, h, b in
                itertools.product(self.depths, self.ffn_dims, self.heads, self.weight_bits)]

    def largest(self) -> SubnetSpec:
        """The full float system: the teacher of KL regularisation and the reference for compression ratios."""
        return SubnetSpec(self.depths[-1], self.ffn_dims[-1], self.heads[-1], max(self.weight_bits))

    def smallest(self) -> SubnetSpec:
        return SubnetSpec(self.depths[0], self.ffn_dims[0], self.heads[0], min(self.weight_bits))

    def sample(self, rng: random.Random) -> SubnetSpec:
        return SubnetSpec(rng.choice(self.depths), rng.choice(self.ffn_dims),
                          rng.choice(self.heads), rng.choice(self.weight_bits))

    def to_dict(self) -> dict:
        return {"format_version": SPEC_FORMAT_VERSION, "depths": list(self.depths), "ffn_dims": list(self.ffn_dims),
                "heads": list(self.heads), "weight_bits": list(self.weight_bits)}

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        if not isinstance(data, dict):
            raise BadInputError(f"search space: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version", SPEC_FORMAT_VERSION)
        if version != SPEC_FORMAT_VERSION:
            raise BadInputError(f"search space: format_version {version!r} is not supported (expected {SPEC_FORMAT_VERSION})")
        unknown = set(data) - {"format_version", "depths", "ffn_dims", "heads", "weight_bits"}
        if unknown:
            raise BadInputError(f"search space: unknown key(s) {sorted(unknown)}")
        try:
            return cls(tuple(data["depths"]), tuple(data["ffn_dims"]), tuple(data["heads"]),
                       tuple(data.get("weight_bits", ALLOWED_WEIGHT_BITS)))
        except KeyError as err:
            raise BadInputError(f"search space: missing key {err.args[0]!r}") from None
