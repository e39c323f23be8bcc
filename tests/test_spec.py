"""SubnetSpec and SearchSpace: ids, round trips, enumeration, sampling and refusal of invalid specs."""

import random

import pytest

from allinone.errors import BadInputError
from allinone.spec import SearchSpace, SubnetSpec

SPACE = SearchSpace(depths=(4, 12, 8), ffn_dims=(512, 256), heads=(2, 4), weight_bits=(32, 8, 4))


def test_id_round_trip_and_dict_round_trip():
    spec = SubnetSpec(12, 576, 4, 4)
    assert spec.id == "d12-f576-h4-w4"
    assert SubnetSpec.from_id(spec.id) == spec
    assert SubnetSpec.from_dict(spec.to_dict()) == spec
    assert SearchSpace.from_dict(SPACE.to_dict()) == SPACE


def test_enumerate_largest_smallest_and_sample_stay_in_space():
    specs = SPACE.enumerate()
    assert len(specs) == 3 * 2 * 2 * 3 == len(set(specs))
    assert SPACE.largest() == SubnetSpec(12, 512, 4, 32)
    assert SPACE.smallest() == SubnetSpec(4, 256, 2, 4)
    rng = random.Random(0)
    samples = {SPACE.sample(rng) for _ in range(200)}
    assert samples <= set(specs) and len(samples) > 20
    assert SPACE.sample(random.Random(7)) == SPACE.sample(random.Random(7))  # deterministic for a seed


@pytest.mark.parametrize("args, message", [
    ((0, 256, 2, 32), "depth must be a positive integer"),
    ((4, 256, 2, 16), "weight_bits must be one of"),
    ((4, 256.0, 2, 8), "ffn_dim must be a positive integer"),
])
def test_invalid_spec_values_are_refused(args, message):
    with pytest.raises(BadInputError, match=message):
        SubnetSpec(*args)


def test_out_of_space_spec_names_the_field():
    with pytest.raises(BadInputError, match=r"d6-f256-h2-w8: depth=6 is not in the search space \(allowed: \[4, 8, 12\]\)"):
        SPACE.validate(SubnetSpec(6, 256, 2, 8))
    assert SubnetSpec(6, 256, 2, 8) not in SPACE


@pytest.mark.parametrize("bad", ["d12-f512-h4", "12-512-4-8", "d12-f512-h4-w8 extra", ""])
def test_malformed_ids_are_refused(bad):
    with pytest.raises(BadInputError, match="expected the form"):
        SubnetSpec.from_id(bad)


def test_dict_with_inconsistent_id_or_version_is_refused():
    data = SubnetSpec(4, 256, 2, 8).to_dict()
    with pytest.raises(BadInputError, match="does not match"):
        SubnetSpec.from_dict({**data, "id": "d4-f256-h2-w4"})
    with pytest.raises(BadInputError, match="format_version 99"):
        SubnetSpec.from_dict({**data, "format_version": 99})
