"""allinone: one all-in-one ASR checkpoint, many nested device-sized systems."""

__version__ = "0.1.0"
