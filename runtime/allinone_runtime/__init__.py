"""Device-side runtime for allinone bundles (depends on executorch, numpy, soundfile; never on allinone)."""

__version__ = "0.1.0"
