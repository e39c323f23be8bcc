"""Peak memory of a nested system on a device: .pte bytes + the program's planned activation bytes
(ExecuTorch's non-constant buffers, read from the .pte) + the runtime's own overhead (`allinone.host_timing`
measures it on the host) + with a word LM, the beam-search decoder's memory (`DecoderCost`). Selection reads
this; it never lowers anything."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from allinone.errors import BadInputError
from allinone.profiles import MIB, DeviceProfile

__all__ = ["planned_activation_bytes", "predict_peak_bytes", "DecoderCost", "decoder_cost", "decoder_peak_bytes",
           "DECODER_BYTES_PER_LM_BYTE", "DECODER_WORKING_BYTES", "DECODER_BYTES_PER_HYPOTHESIS"]

# The beam-search decoder's resident memory, measured by benchmarks/decoder_memory.py (docs/benchmarks.md,
# "Decoder memory") on the shipped checkpoint's 8-bit bundle with the v1 training-text trigram (995,219 LM bytes)
# and 27.5 s (685 frames) of test speech, in the runtime that needs more (Python: 12.6 MiB at beam 8; the native
# runner 6.0 MiB):
# - the loaded LM and the lexicon trie: 11.3 MiB, 11.9x the LM files' bytes (dicts of n-gram tuples), rounded up;
# - decoding at beam 8: 1.3 MiB, of which 1.1 MiB does not grow with the beam (the log-probs as doubles and
#   Python floats, the per-node unit tables); scaled to a whole 30 s call (750 frames) and with the unit-table
#   cache at its cap (beam.NODE_TABLES: 0.9 MiB), 2.25 MiB;
# - each hypothesis more: 31 KiB (beams 8 to 32), scaled to 750 frames and rounded up.
DECODER_BYTES_PER_LM_BYTE = 12
DECODER_WORKING_BYTES = 2304 * 1024
DECODER_BYTES_PER_HYPOTHESIS = 40 * 1024


@dataclass(frozen=True)
class DecoderCost:
    """What a word LM adds to a bundle: the bytes it ships (lm/ files, counted with the model's bytes) and the
    beam-search decoder's predicted peak memory at `beam` (counted in the peak)."""

    lm_dir: str
    lm_bytes: int
    beam: int
    peak_bytes: int

    def to_dict(self) -> dict:
        return {"lm": self.lm_dir, "lm_bytes": self.lm_bytes, "beam": self.beam, "peak_bytes": self.peak_bytes}


def decoder_peak_bytes(lm_bytes: int, beam: int) -> int:
    """Predicted resident memory of the beam-search decoder: loaded LM + lexicon + working memory and `beam`
    hypotheses over a 30 s call (constants above)."""
    return math.ceil(DECODER_BYTES_PER_LM_BYTE * lm_bytes + DECODER_WORKING_BYTES + beam * DECODER_BYTES_PER_HYPOTHESIS)


def decoder_cost(lm_dir: str | Path, beam: int) -> DecoderCost:
    """The cost of putting the LM directory `lm_dir` (`allinone lm build`) in a bundle and decoding with it at
    `beam`; the LM is checked as a bundle's would be (one line on a missing or damaged file)."""
    from allinone_runtime.ngram import check_lm_files

    if not isinstance(beam, int) or isinstance(beam, bool) or not 1 <= beam <= 1024:
        raise BadInputError(f"--beam: expected an integer 1 to 1024, got {beam!r}")
    _, arpa_path, arpa = check_lm_files(lm_dir)
    lm_bytes = (Path(lm_dir) / "lm.json").stat().st_size + len(arpa)  # the files `build --lm` puts in lm/
    return DecoderCost(str(lm_dir), lm_bytes, beam, decoder_peak_bytes(lm_bytes, beam))

def planned_activation_bytes(pte: bytes | str | Path, method: str = "forward") -> int:
    """Bytes ExecuTorch's memory planner reserves for `method`'s non-constant tensors (activations).

    The runtime's Python MethodMeta does not expose the planned buffers, so the figure is read from the
    serialized program: `execution_plan[].non_const_buffer_sizes`, whose entry 0 is reserved for constants.
    A program with a dynamic audio length is planned for its upper bound (30 s), so this is the worst case.
    Memory the XNNPACK delegate allocates for itself (its workspace, packed weights) is not in it."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = pte if isinstance(pte, (bytes, bytearray)) else Path(pte).read_bytes()
    where = "program" if isinstance(pte, (bytes, bytearray)) else str(pte)
    try:
        program = deserialize_pte_binary(bytes(data)).program
    except Exception as err:  # the flatbuffer reader raises assorted errors on a damaged file
        raise BadInputError(f"{where}: not an ExecuTorch program ({err.__class__.__name__}); expected a .pte") from None
    plans = {plan.name: plan for plan in program.execution_plan}
    if method not in plans:
        raise BadInputError(f"{where}: no method {method!r}; expected one of {', '.join(sorted(plans))}")
    return int(sum(plans[method].non_const_buffer_sizes[1:]))


def predict_peak_bytes(model_bytes: int, activation_bytes: int | None, profile: DeviceProfile,
                       decoder_bytes: int = 0) -> int:
    """Peak resident memory of a system on `profile`'s device: model (.pte) + planned activations + the
    runtime's own overhead + the beam-search decoder's memory, if any (`DecoderCost.peak_bytes`). Unmeasured
    activations count as 0, so the figure is then a lower bound."""
    return (int(model_bytes) + int(activation_bytes or 0) + int(profile.memory.runtime_overhead_mib * MIB)
            + int(decoder_bytes))
