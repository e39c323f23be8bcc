"""`allinone info`: what a model family offers — its search space and the size of representative systems."""

from __future__ import annotations

__all__ = ["describe_model"]


def describe_model(name: str, vocab_size: int = 29) -> str:
    """A text table of the search space of factory `name` and the sizes of its corner systems."""
    from allinone.models.registry import model_factory
    from allinone.size import subnet_size

    model = model_factory(name)(vocab_size).eval()
    space = model.search_space
    full = subnet_size(model, space.largest())
    lines = [
        f"{name}: {len(space.enumerate())} nested systems from one set of weights",
        f"  depths {list(space.depths)}, ffn widths {list(space.ffn_dims)}, heads {list(space.heads)}, "
        f"weight bits {list(space.weight_bits)}",
        "",
        f"  {'system':<18}{'params':>10}{'bytes':>12}{'compression':>13}{'MMAC/s audio':>14}",
    ]
    corners = [space.largest().with_bits(b) for b in sorted(space.weight_bits, reverse=True)]
    corners += [space.smallest().with_bits(b) for b in sorted(space.weight_bits, reverse=True)]
    for spec in corners:
        size = subnet_size(model, spec)
        lines.append(f"  {spec.id:<18}{size.params:>10,}{size.weight_bytes:>12,}"
                     f"{full.weight_bytes / size.weight_bytes:>12.1f}x{size.macs_per_second / 1e6:>14.1f}")
    return "\n".join(lines)
