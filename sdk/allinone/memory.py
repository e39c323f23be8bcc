"""Peak memory of a nested system on a device: .pte bytes + the program's planned activation bytes
(ExecuTorch's non-constant buffers, read from the .pte) + the runtime's own overhead (`allinone.host_timing`
measures it on the host) + with a word LM, the beam-search decoder's memory (`DecoderCost`). Selection reads
this; it never lowers anything."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from allinone.errors import BadInputError
from allinone.profiles import MIB, DeviceProfile

__all__ = ["planned_activation_bytes", "predict_peak_bytes", "DecoderCost", "decoder_cost", "decoder_peak_bytes",
           "DECODER_LOAD_BYTES_PER_LM_BYTE", "DECODER_LOAD_BYTES_PER_WORD", "DECODER_BYTES_PER_LM_BYTE",
           "DECODER_BYTES_PER_WORD", "DECODER_WORKING_BYTES", "DECODER_BYTES_PER_HYPOTHESIS"]

# The beam-search decoder's memory, measured by benchmarks/decoder_memory.py (docs/benchmarks.md, "Decoder
# memory") on the shipped checkpoint's bundles with four LMs (3.4-14.0 MiB of files, 10,327-76,920 words) and
# 27.5 s (685 frames) of test speech, in the runtime that needs more (Python; the native runner needs a quarter
# to a half). The process peak is the largest of three moments; two are fitted to the four LMs and rounded up
# (the third, the loaded LM plus the trie while it is built, stays below the decoding charge on all four):
# - loading the LM (the file, one order's parsed lines and the sort that makes its arrays): 3.2 bytes per LM
#   byte and 225 per word fit; 3.3 and 230 here;
# - decoding: the loaded LM (sorted arrays) and its word list, and the lexicon trie (flat arrays, 30-55 bytes per
#   word; up to about 145 while it is built): 1.63 bytes per LM byte and 295 per word fit; 1.7 and 300 here;
#   working memory, 1.1 MiB at beam 8 that does not grow with the beam (the log-probs as doubles and Python
#   floats, the per-node unit tables), scaled to a whole 30 s call (750 frames) and with the unit-table cache at its cap
#   (beam.NODE_TABLES: 0.9 MiB), 2.25 MiB; and 31 KiB per hypothesis more (beams 8 to 32), scaled to 750 frames
#   and rounded up.
# The four LMs' peaks are predicted 2-15 % high; loading was the measured peak for all four. Before 2026-12-05 the
# LM was held in dicts of n-gram tuples (12 bytes per LM byte); until later that day the trie held a dict per
# node (490-640 bytes per word; the decoding moment charged 1.6 per LM byte and 880 per word).
DECODER_LOAD_BYTES_PER_LM_BYTE = 3.3
DECODER_LOAD_BYTES_PER_WORD = 230
DECODER_BYTES_PER_LM_BYTE = 1.7
DECODER_BYTES_PER_WORD = 300
DECODER_WORKING_BYTES = 2304 * 1024
DECODER_BYTES_PER_HYPOTHESIS = 40 * 1024


@dataclass(frozen=True)
class DecoderCost:
    """What a word LM adds to a bundle: the bytes it ships (lm/ files, counted with the model's bytes) and the
    beam-search decoder's predicted peak memory at `beam` (counted in the peak)."""

    lm_dir: str
    lm_bytes: int
    words: int
    beam: int
    peak_bytes: int

    def to_dict(self) -> dict:
        return {"lm": self.lm_dir, "lm_bytes": self.lm_bytes, "words": self.words, "beam": self.beam,
                "peak_bytes": self.peak_bytes}


def decoder_peak_bytes(lm_bytes: int, words: int, beam: int) -> int:
    """Predicted peak memory of the beam-search decoder with an LM of `lm_bytes` file bytes and `words` unigrams:
    the larger of loading it and decoding with `beam` hypotheses over a 30 s call (constants above)."""
    load = DECODER_LOAD_BYTES_PER_LM_BYTE * lm_bytes + DECODER_LOAD_BYTES_PER_WORD * words
    decode = (DECODER_BYTES_PER_LM_BYTE * lm_bytes + DECODER_BYTES_PER_WORD * words + DECODER_WORKING_BYTES
              + beam * DECODER_BYTES_PER_HYPOTHESIS)
    return math.ceil(max(load, decode))


def decoder_cost(lm_dir: str | Path, beam: int) -> DecoderCost:
    """The cost of putting the LM directory `lm_dir` (`allinone lm build`) in a bundle and decoding with it at
    `beam`; the LM is checked as a bundle's would be (one line on a missing or damaged file)."""
    from allinone_runtime.ngram import check_lm_files

    if not isinstance(beam, int) or isinstance(beam, bool) or not 1 <= beam <= 1024:
        raise BadInputError(f"--beam: expected an integer 1 to 1024, got {beam!r}")
    _, arpa_path, arpa = check_lm_files(lm_dir)
    unigrams = re.search(rb"^ngram 1=(\d+)\s*$", arpa[:4096], re.MULTILINE)
    if unigrams is None:
        raise BadInputError(f"{arpa_path}: no 'ngram 1=COUNT' line in its header; expected an ARPA language model")
    lm_bytes = (Path(lm_dir) / "lm.json").stat().st_size + len(arpa)  # the files `build --lm` puts in lm/
    words = int(unigrams.group(1))
    return DecoderCost(str(lm_dir), lm_bytes, words, beam, decoder_peak_bytes(lm_bytes, words, beam))


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
