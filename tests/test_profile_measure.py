"""`allinone profiles measure`: the design, the timing cache (interrupted and rerun), and real lowered programs of
the tiny checkpoint timed here into a profile that validates."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import allinone.host_timing as host_timing
from allinone.errors import BadInputError
from allinone.host_timing import Timing
from allinone.profile_measure import (ROUND_RUNS, _time_with_cache, cached_host_profile, design,
                                      host_profile_path, measure_profile)
from allinone.profiles import load_profile, validate_profile_file
from allinone.spec import SearchSpace, SubnetSpec
from allinone_runtime.device import isa_features

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "tiny_overfit"
CLI = Path(sys.executable).with_name("allinone")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test gets its own cache (never the user's ~/.cache/allinone)."""
    monkeypatch.setenv("ALLINONE_CACHE_DIR", str(tmp_path / "cache"))


def test_design_spans_depth_width_and_every_precision():
    specs = design(SearchSpace(depths=(4, 8, 12), ffn_dims=(128, 256, 512), heads=(2, 3, 4), weight_bits=(4, 8, 32)))
    assert [s.id for s in specs[:4]] == ["d12-f512-h4-w32", "d4-f128-h2-w32", "d12-f128-h2-w32", "d4-f512-h4-w32"]
    assert [s.weight_bits for s in specs] == [32] * 4 + [8] * 4 + [4] * 4
    # one depth: deep-narrow is the smallest, shallow-wide the largest, so each precision has two systems
    one = design(SearchSpace(depths=(6,), ffn_dims=(128, 512), heads=(4,), weight_bits=(8,)))
    assert [s.id for s in one] == ["d6-f512-h4-w8", "d6-f128-h4-w8"]


def _fake_timer(calls: list, fail_on_round: int | None = None):
    """time_programs stand-in: records (programs, runs) and fails like Ctrl-C on round `fail_on_round`."""
    def time_programs(ptes, *, threads, audio_s, runs):
        calls.append((len(ptes), runs))
        if fail_on_round is not None and len(calls) == fail_on_round:
            raise KeyboardInterrupt
        return [Timing(audio_s, threads, 1.0, 2.0, tuple(10.0 + k for k in range(runs)), 1) for _ in ptes]
    return time_programs


def test_interrupted_timing_resumes_from_the_cache(tmp_path, monkeypatch):
    programs = [("d1-f64-h1-w32", b"program one"), ("d2-f128-h2-w8", b"program two")]
    cache = tmp_path / "timings.json"
    calls: list = []
    monkeypatch.setattr(host_timing, "time_programs", _fake_timer(calls, fail_on_round=2))
    with pytest.raises(KeyboardInterrupt):
        _time_with_cache(programs, threads=2, audio_s=10.0, runs=ROUND_RUNS + 2, cache=cache)
    assert calls == [(2, ROUND_RUNS), (2, 2)] and cache.is_file()  # round 1 saved before round 2 was cut off
    calls.clear()
    monkeypatch.setattr(host_timing, "time_programs", _fake_timer(calls))
    times = _time_with_cache(programs, threads=2, audio_s=10.0, runs=ROUND_RUNS + 2, cache=cache)
    assert calls == [(2, 2)]  # only what was missing
    assert all(len(t) == ROUND_RUNS + 2 for t in times.values())
    calls.clear()
    assert _time_with_cache(programs, threads=2, audio_s=10.0, runs=ROUND_RUNS + 2, cache=cache) == times
    assert calls == []  # everything cached: nothing timed
    # a changed program (another sha256) is timed afresh; the unchanged one is not
    _time_with_cache([programs[0], ("d2-f128-h2-w8", b"program two, rebuilt")], threads=2, audio_s=10.0,
                     runs=ROUND_RUNS + 2, cache=cache)
    assert calls == [(1, ROUND_RUNS), (1, 2)]


def _float_base(tmp_path: Path) -> Path:
    """host-x86_64's budgets, float only: the fast test times two float systems."""
    data = load_profile("host-x86_64").to_dict()
    data.update(name="float-host", weight_bits=[32])
    path = tmp_path / "float-host.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="the device probe reads /proc/cpuinfo")
def test_measure_tiny_checkpoint_writes_a_valid_profile_and_reruns_from_cache(tmp_path, monkeypatch, caplog):
    """Two real lowered float systems of the tiny checkpoint (lowered at once, in two processes), timed here:
    the profile validates, records the machine, its CPU features and the fit; a rerun lowers and times
    nothing."""
    specs = [SubnetSpec.from_id("d1-f64-h1-w32"), SubnetSpec.from_id("d2-f128-h2-w32")]
    out = tmp_path / "my-host.yaml"
    with caplog.at_level(logging.INFO, logger="allinone.lowering"):
        result = measure_profile(TINY, out, threads=1, runs=3, base=_float_base(tmp_path), specs=specs, jobs=2)
    assert "lowering 2 systems in 2 processes" in caplog.text
    profile = validate_profile_file(out)
    assert profile == result.profile and profile.name == "my-host" and profile.threads == 1
    model = profile.latency_model
    assert model.source == "measured" and model.workload_factor == 1.0 and model.throughput_gmacs.fp32 > 0
    assert profile.isa == tuple(isa_features()) and model.device.cores >= 1 and model.device.cpu
    assert model.fit.systems == 2 and model.fit.loo_max_error_pct is not None
    assert model.uncertainty_pct >= 10 and profile.weight_bits == (32,)
    assert [s for s, _ in result.systems] == ["d1-f64-h1-w32", "d2-f128-h2-w32"]
    assert all(ms > 0 for _, ms in result.systems) and "tiny_overfit" in model.citations[0]
    assert 50 <= profile.memory.runtime_overhead_mib < 2048  # measured here, not the base's 384
    # rerun: programs and timings come from the cache, so nothing is lowered or timed
    monkeypatch.setattr(host_timing, "time_programs", _fake_timer([], fail_on_round=1))
    monkeypatch.setattr("allinone.export.export_subnet", lambda *a, **k: pytest.fail("lowered again"))
    again = measure_profile(TINY, tmp_path / "again.yaml", threads=1, runs=3, base=_float_base(tmp_path), specs=specs)
    assert again.systems == result.systems
    # the demo's host profile: measured once per machine, then read from the cache
    base = load_profile(_float_base(tmp_path))
    cached = host_profile_path(TINY, base, 1)
    cached.parent.mkdir(parents=True)
    cached.write_text(out.read_text())
    profile_again, path, fresh = cached_host_profile(TINY, base, 1)
    assert (profile_again, path, fresh) == (profile, cached, False)


def test_interrupted_measure_leaves_no_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(host_timing, "lowered_programs",
                        lambda model, specs, *a, **k: {s.id: b"not lowered: interrupted first" for s in specs})
    monkeypatch.setattr(host_timing, "time_programs", _fake_timer([], fail_on_round=1))
    out = tmp_path / "my-host.yaml"
    with pytest.raises(KeyboardInterrupt):
        measure_profile(TINY, out, runs=3, base=_float_base(tmp_path), specs=[SubnetSpec.from_id("d1-f64-h1-w32")])
    assert not out.exists() and not list(tmp_path.glob(".my-host.yaml*"))


@pytest.mark.parametrize("args, message", [
    (["--out", "host.txt"], "--out host.txt: expected a .yaml file to write the profile to"),
    (["--out", "Host.yaml"], "--name Host: name: expected lower-case letters, digits"),
    (["--out", "h.yaml", "--runs", "1"], "--runs: expected at least 3 timed calls per system (a median), got 1"),
    (["--out", "h.yaml", "--threads", "0"], "--threads: expected 1-256, got 0"),
    (["--out", "h.yaml", "--jobs", "0"], "--jobs 0: expected a number of lowering processes >= 1"),
    (["--out", "h.yaml", "--base", "pixel-8"], "--base pixel-8: device.machine"),
])
def test_cli_measure_bad_input_is_one_line(tmp_path, args, message):
    done = subprocess.run([str(CLI), "profiles", "measure", "--checkpoint", str(TINY), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith(f"allinone: error: {message}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("*.yaml"))


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(BadInputError, match="config.json"):
        measure_profile(tmp_path / "nope", tmp_path / "x.yaml", base=_float_base(tmp_path))


@pytest.mark.slow
def test_cli_measure_full_design_on_the_tiny_checkpoint(tmp_path):
    """The command as a user runs it: 12 systems (3 precisions x 4 shapes) lowered, timed and fitted with the
    per-block term; the profile validates with `allinone profiles validate`."""
    done = subprocess.run([str(CLI), "profiles", "measure", "--checkpoint", str(TINY), "--out", "tiny-host.yaml",
                           "--threads", "1", "--runs", "3"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=3600, env={**os.environ, "ALLINONE_CACHE_DIR": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tiny-host.yaml: tiny-host, 1 threads, isa ")
    profile = validate_profile_file(tmp_path / "tiny-host.yaml")
    assert profile.latency_model.fit.systems == 12 and profile.weight_bits == (32, 8, 4)
    assert profile.latency_model.block_ms_per_s is not None or "block_ms_per_s" not in done.stdout
    valid = subprocess.run([str(CLI), "profiles", "validate", "tiny-host.yaml"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert valid.returncode == 0 and valid.stdout == "ok: tiny-host.yaml (tiny-host)\n"
