"""Speech data: text normalisation, the character tokenizer, manifest readers, audio loading, augmentation,
batching, and the offline synthetic corpus (`synthesize`).

Names are imported lazily, so `import allinone.data` does not pull in torch or scipy until they are used.
"""

from __future__ import annotations

import importlib

__all__ = [
    # text.py / tokenizer.py
    "normalize_text", "spell_number", "CharTokenizer",
    # audio.py
    "SAMPLE_RATE", "load_audio", "resample", "audio_duration",
    # manifest.py
    "Utterance", "Problem", "ManifestReadResult", "read_manifest", "read_jsonl", "read_librispeech",
    "read_kaldi", "read_tsv", "write_jsonl",
    # augment.py
    "AugmentConfig", "augment_waveform",
    # batching.py
    "DurationBatchSampler", "SpeechDataset", "SpeechBatch", "collate_speech", "make_loader",
    # synth.py
    "synthesize", "SynthReport",
]

_MODULE_OF = {
    "normalize_text": "text", "spell_number": "text", "CharTokenizer": "tokenizer",
    "SAMPLE_RATE": "audio", "load_audio": "audio", "resample": "audio", "audio_duration": "audio",
    "Utterance": "manifest", "Problem": "manifest", "ManifestReadResult": "manifest", "read_manifest": "manifest",
    "read_jsonl": "manifest", "read_librispeech": "manifest", "read_kaldi": "manifest", "read_tsv": "manifest",
    "write_jsonl": "manifest",
    "AugmentConfig": "augment", "augment_waveform": "augment",
    "DurationBatchSampler": "batching", "SpeechDataset": "batching", "SpeechBatch": "batching",
    "collate_speech": "batching", "make_loader": "batching",
    "synthesize": "synth", "SynthReport": "synth",
}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"allinone.data.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'allinone.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
