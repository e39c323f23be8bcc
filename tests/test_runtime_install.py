"""`pip install ./runtime` on its own: a fresh virtual environment (no system site-packages, no allinone) holds
the device runtime only, and transcribes and benches a bundle built from the tiny test checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "sdk/allinone/assets/sample.wav"
SAMPLE_TEXT = (ROOT / "sdk/allinone/assets/sample.txt").read_text().strip()

# The runtime's job needs none of these; the check is that it never imports them, since the executorch wheel
# itself declares torchao and scikit-learn (so scipy) as dependencies.
SDK_ONLY = ["allinone", "jiwer", "torchao", "scipy", "executorch.exir"]  # (import torch loads torch.export)


@pytest.mark.slow  # installs torch and executorch into a new environment: minutes (pip's cache helps)
def test_runtime_installs_alone_and_transcribes_and_benches(tmp_path):
    from allinone.build import export_bundle

    bundle = export_bundle(ROOT / "tests/fixtures/tiny_overfit", "d1-f64-h1-w32", tmp_path / "bundle")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT / "runtime")], check=True, timeout=1800)
    installed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                               check=True).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "allinone-runtime" in names and "allinone-asr" not in names and "jiwer" not in names

    code = f"""
import json, sys
from allinone_runtime import Bundle, Transcriber, bench
b = Bundle.open({str(bundle)!r})
text = Transcriber(b).transcribe({str(SAMPLE)!r}).text
report = bench(b, lengths_s=[1.0], runs=2)
print(json.dumps({{"text": text, "p50": report["latency"][0]["p50_ms"],
                  "loaded": [m for m in {SDK_ONLY!r} if m in sys.modules]}}))
"""
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["text"] == SAMPLE_TEXT and out["p50"] > 0 and out["loaded"] == []

    cli = subprocess.run([str(venv / "bin" / "allinone-runtime"), "bench", str(bundle), "--out",
                          str(tmp_path / "bench"), "--runs", "2"], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert json.loads((tmp_path / "bench" / "report.json").read_text())["measured"] is True
