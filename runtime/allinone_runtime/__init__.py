"""Device-side runtime for allinone bundles (depends on executorch, numpy, soundfile; never on allinone).

    from allinone_runtime import Bundle, Transcriber
    result = Transcriber(Bundle.open("dist/pixel-8")).transcribe("speech.wav")
    print(result.text, [(w.word, w.start_s, w.end_s) for w in result.words])

torch is imported only when a program is loaded (ExecuTorch's Python bindings take torch tensors).
"""

from __future__ import annotations

import importlib

__all__ = ["Bundle", "Transcriber", "Transcript", "Word", "RuntimeInputError", "bench", "write_report",
           "merge_reports", "validate_report", "check_executorch_compat", "BeamDecoder", "DecoderOptions",
           "Hotword", "read_hotwords", "load_lm", "__version__"]

__version__ = "0.1.0"

# Public names resolve on first use (PEP 562), so `allinone` importing the error class for its CLI does not
# pay for numpy and soundfile at start-up.
_HOMES = {"Bundle": "bundle", "check_executorch_compat": "bundle", "Transcriber": "transcribe",
          "Transcript": "transcribe", "Word": "ctc", "RuntimeInputError": "errors", "bench": "timing",
          "write_report": "report", "merge_reports": "report", "validate_report": "schema",
          "BeamDecoder": "beam", "DecoderOptions": "beam", "Hotword": "beam", "read_hotwords": "beam",
          "load_lm": "ngram"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"allinone_runtime.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'allinone_runtime' has no attribute {name!r}")
