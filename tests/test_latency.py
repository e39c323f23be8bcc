"""The latency model's fit, calibration from report.json, peak-memory prediction, and (slow) host measurement."""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from allinone.catalog import Catalog, CatalogEntry
from allinone.errors import BadInputError
from allinone.latency import (LatencyPoint, calibrate_profile, check_report_device, fit_latency_model,
                              fitted_latency_model, predict_peak_bytes, read_report)
from allinone.latency_fit import leave_one_out_errors
from allinone.profiles import MIB, load_profile, profile_from_dict, validate_profile_file
from allinone.validation import plain as _plain
from allinone.select import select

CLI = Path(sys.executable).with_name("allinone")


def _points(overhead_ms: float, gmacs: dict[int, float], macs_per_second: list[float], audio_s: float = 10.0):
    """Exact measurements of a device that follows the latency model."""
    return [LatencyPoint(f"s{i}-w{bits}", bits, m, audio_s, overhead_ms + m * audio_s / (g * 1e6))
            for bits, g in gmacs.items() for i, m in enumerate(macs_per_second)]


# ---- the fit ------------------------------------------------------------------------------------------------------


def test_fit_recovers_the_parameters_of_a_device_that_follows_the_model():
    fit = fit_latency_model(_points(7.0, {32: 40.0, 8: 120.0, 4: 90.0}, [60e6, 120e6, 170e6]))
    assert fit.overhead_fitted and fit.overhead_ms == pytest.approx(7.0)
    assert fit.effective_gmacs == pytest.approx({32: 40.0, 8: 120.0, 4: 90.0})
    assert fit.max_abs_error == pytest.approx(0.0, abs=1e-9)


def test_fit_minimises_relative_error():
    """A 5% slow outlier on the biggest system must not drag the small systems' predictions by more than it
    errs itself, as an absolute least-squares fit would."""
    points = _points(2.0, {8: 100.0}, [20e6, 40e6, 80e6, 160e6])
    points[-1] = LatencyPoint(points[-1].subnet, 8, points[-1].macs_per_second, 10.0, points[-1].ms * 1.05)
    errors = fit_latency_model(points).relative_errors()
    assert max(abs(e) for e in errors) < 0.05


def test_fit_keeps_the_prior_overhead_when_points_cannot_separate_it():
    one = [LatencyPoint("a", 8, 100e6, 10.0, 105.0)]
    fit = fit_latency_model(one, prior_overhead_ms=5.0)
    assert not fit.overhead_fitted and fit.overhead_ms == 5.0
    assert fit.effective_gmacs[8] == pytest.approx(10.0)  # 1e9 MACs in 100 ms
    faster = fit_latency_model(one, prior_overhead_ms=200.0)  # a call faster than the prior overhead alone
    assert faster.overhead_ms == 0.0 and faster.effective_gmacs[8] == pytest.approx(1e9 / 105e-3 / 1e9)
    with pytest.raises(BadInputError, match="no measurements"):
        fit_latency_model([])


def test_fit_never_reports_a_negative_overhead():
    # Latency that grows faster than MACs would need a negative intercept; the fit keeps the prior instead.
    points = [LatencyPoint("a", 8, 10e6, 10.0, 1.0), LatencyPoint("b", 8, 100e6, 10.0, 20.0)]
    fit = fit_latency_model(points, prior_overhead_ms=0.0)
    assert fit.overhead_ms == 0.0 and not fit.overhead_fitted


def test_per_block_fit_separates_depth_from_macs():
    """Two systems with equal MACs but different depth: only the per-block term can tell them apart."""
    truth = dict(overhead=2.0, block=0.1, gmacs=50.0)
    points = [LatencyPoint(f"d{d}-m{m:.0f}", 8, m, 10.0, truth["overhead"] + truth["block"] * d * 10 + m * 10 / 50e6, d)
              for d, m in ((4, 58e6), (10, 85e6), (4, 81e6), (12, 172e6))]
    plain = fit_latency_model(points)
    assert plain.max_abs_error > 0.03 and plain.block_ms_per_s == 0.0
    fit = fit_latency_model(points, per_block=True)
    assert fit.overhead_ms == pytest.approx(2.0) and fit.block_ms_per_s == pytest.approx(0.1)
    assert fit.effective_gmacs[8] == pytest.approx(50.0) and fit.max_abs_error < 1e-6
    # A profile stores the per-block term and predicts with it (format 2: latency_model.block_ms_per_s).
    model, notes = fitted_latency_model(fit, load_profile("host-x86_64").latency_model, source="measured",
                                        date="2026-01-01", citations=["x"])
    assert model.block_ms_per_s == pytest.approx(0.1) and any(n.startswith("block_ms_per_s: fitted") for n in notes)
    assert model.fit.systems == 4 and model.fit.max_error_pct == 0.0
    for p in points:
        assert model.predict_ms(p.macs, 8, blocks=p.blocks, audio_s=p.audio_s) == pytest.approx(p.ms)
    # Fixed instead of fitted (calibrating from a few reports keeps the profile's term).
    fixed = fit_latency_model(points[:2], fixed_block_ms_per_s=0.1)
    assert fixed.block_ms_per_s == 0.1 and not fixed.block_fitted and fixed.max_abs_error < 1e-6


def test_size_term_bends_the_mac_cost_per_precision_and_round_trips_through_a_profile(tmp_path):
    """A device whose small float systems run faster per MAC (negative term) and small 8-bit ones slower
    (positive): one size coefficient per precision recovers it, which MACs alone cannot."""
    gmacs, size, overhead, block = {32: 100.0, 8: 250.0}, {32: -0.3, 8: 0.5}, 3.0, 0.04

    def ms(bits, m, d):
        return overhead + block * d * 10 + m * 10 / (gmacs[bits] * 1e6) + size[bits] * 10 * math.sqrt(m / 1e9)

    shapes = [(2, 70e6), (2, 130e6), (20, 320e6), (20, 920e6), (8, 230e6)]
    points = [LatencyPoint(f"d{d}-{m:.0f}-w{b}", b, m, 10.0, ms(b, m, d), d) for b in (32, 8) for d, m in shapes]
    without = fit_latency_model(points, per_block=True)
    assert without.max_abs_error > 0.02
    fit = fit_latency_model(points, per_block=True, size_term=True)
    assert fit.size_fitted and fit.max_abs_error < 1e-6
    assert fit.size_term_ms == pytest.approx(size) and fit.effective_gmacs == pytest.approx(gmacs)
    assert max(map(abs, leave_one_out_errors(points, per_block=True, size_term=True))) < 1e-6
    # Stored as latency_model.size_term_ms (format 3); the profile predicts what the fit does.
    base = load_profile("host-x86_64")
    model, notes = fitted_latency_model(fit, base.latency_model, source="measured", date="2026-01-01",
                                        citations=["x"])
    assert model.size_term_ms.fp32 == pytest.approx(-0.3) and model.size_term_ms.int4 is None
    assert any(n.startswith("size_term_ms: fitted") for n in notes)
    profile = profile_from_dict({**base.to_dict(), "format_version": 3, "latency_model": _plain(model)})
    path = tmp_path / "sized.yaml"
    path.write_text(yaml.safe_dump(profile.to_dict(), sort_keys=False))
    loaded = validate_profile_file(path)
    for p in points:
        assert loaded.predict_latency_ms(p.macs, p.weight_bits, blocks=p.blocks, audio_s=10.0) == pytest.approx(p.ms)
    with pytest.raises(BadInputError, match="audio_s: expected the audio length"):
        loaded.predict_latency_ms(1e9, 8)  # the size term needs the length; never silently dropped
    # Calibrating from a couple of calls keeps the term instead of refitting it.
    kept = fit_latency_model(points[:2], per_block=False, fixed_block_ms_per_s=block, fixed_size_term_ms=size)
    assert not kept.size_fitted and kept.size_term_ms == {32: -0.3} and kept.max_abs_error < 1e-6
    # Too few systems per precision to separate the term: one line, not a wild curve.
    with pytest.raises(BadInputError, match="cannot separate a size term"):
        fit_latency_model(points[:2] + points[5:7], size_term=True)


def test_unmeasured_precisions_scale_like_the_measured_ones():
    prior = load_profile("raspberry-pi-5").latency_model
    fit = fit_latency_model(_points(3.0, {8: prior.effective_gmacs(8) * 2}, [50e6, 150e6]))
    model, notes = fitted_latency_model(fit, prior, source="calibrated", date="2026-01-02", citations=["x"])
    assert model.workload_factor == 1.0 and model.source == "calibrated" and model.date == "2026-01-02"
    assert model.throughput_gmacs.int8 == pytest.approx(prior.effective_gmacs(8) * 2, rel=1e-3)
    assert model.throughput_gmacs.int4 == pytest.approx(prior.effective_gmacs(4) * 2, rel=1e-3)
    assert any("int4: not measured; prior figure scaled by 2.00" in n for n in notes)


# ---- peak memory ------------------------------------------------------------------------------------------------


def test_peak_memory_is_pte_plus_planned_activations_plus_runtime_overhead():
    profile = load_profile("raspberry-pi-zero-2w")
    overhead = int(profile.memory.runtime_overhead_mib * MIB)
    assert predict_peak_bytes(3_000_000, 5_558_592, profile) == 3_000_000 + 5_558_592 + overhead
    assert predict_peak_bytes(3_000_000, None, profile) == 3_000_000 + overhead  # unmeasured: a lower bound
    # select composes it the same way, from the .pte size when known, else the weight bytes
    built = CatalogEntry("d4-f128-h2-w4", 4, 806_109, 1_416_388, 58e6, 0.2, pte_bytes=1_480_000,
                         activation_bytes=5_558_592)
    unbuilt = CatalogEntry("d6-f128-h2-w4", 4, 1_100_000, 1_900_000, 80e6, 0.3)
    peaks = {c.entry.subnet: c.peak_bytes for c in select(Catalog((built, unbuilt)), profile).candidates}
    assert peaks == {"d4-f128-h2-w4": predict_peak_bytes(1_480_000, 5_558_592, profile),
                     "d6-f128-h2-w4": predict_peak_bytes(1_900_000, None, profile)}


# ---- reports and calibration ------------------------------------------------------------------------------------


PI5_ISA = ["asimd", "asimdhp", "asimddp"]  # Cortex-A76, as device_profiles/raspberry-pi-5.yaml names it


def report_json(machine="aarch64", system="Linux 6.6.31+rpt-rpi-2712", threads=4, bits=8, macs=172.2e6,
                lengths=((2.0, 62.0), (10.0, 270.0), (20.0, 530.0)), profile="raspberry-pi-5",
                isa=PI5_ISA) -> dict:
    """A report as docs/formats.md (Latency report) documents it, written by hand; `isa=None`: format 1."""
    device = {"hostname": "pi5", "machine": machine, "system": system, "cpu": "Cortex-A76", "cores": 4}
    return {
        "format_version": 1 if isa is None else 2, "kind": "allinone-latency-report", "measured": True,
        "date": "2026-11-20T10:15:00Z",
        "device": device if isa is None else {**device, "isa": list(isa)},
        "runner": "cpp",
        "bundle": {"path": "dist/raspberry-pi-5", "subnet": f"d12-f512-h4-w{bits}", "weight_bits": bits,
                   "macs_per_second": macs, "pte_bytes": 6_100_000, "pte_sha256": "0" * 64, "profile": profile},
        "threads": threads, "runs": 10, "load_ms": 12.5, "first_run_ms": 80.0,
        "latency": [{"audio_s": a, "p50_ms": ms, "p90_ms": ms * 1.05, "min_ms": ms * 0.97, "max_ms": ms * 1.1,
                     "mean_ms": ms * 1.01, "rtf": ms / (a * 1000)} for a, ms in lengths],
        "peak_rss_bytes": 60_000_000,
    }


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_calibrate_refits_from_a_report_and_cites_it(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(report_json()))
    result = _cli("calibrate", "--profile", "raspberry-pi-5", "--report", "report.json", "--out", "pi5.yaml",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pi5.yaml: overhead_ms ")
    text = (tmp_path / "pi5.yaml").read_text()
    assert text.startswith("# Calibrated by `allinone calibrate` from report.json.")
    profile = load_profile(tmp_path / "pi5.yaml")  # a calibrated profile loads like any other
    model = profile.latency_model
    assert model.source == "calibrated" and model.date == datetime.date.today().isoformat()
    assert "report.json" in model.citations[0] and "d12-f512-h4-w8" in model.citations[0]
    assert "10 s = 270.0 ms" in model.citations[0]
    # the three lengths lie on a line: 10 ms + 26 ms per second of audio
    assert model.overhead_ms == pytest.approx(10.0, abs=0.01)
    assert profile.predict_latency_ms(172.2e6 * 10, 8) == pytest.approx(270.0, rel=1e-3)
    assert profile.name == "raspberry-pi-5" and profile.memory == load_profile("raspberry-pi-5").memory
    assert "Calibration: refitted from 3 measured call(s) in 1 report(s)" in profile.notes


def test_cli_calibrate_refuses_a_report_from_another_device(tmp_path):
    (tmp_path / "x86.json").write_text(json.dumps(report_json(machine="x86_64", system="Linux 6.1.0")))
    result = _cli("calibrate", "--profile", "raspberry-pi-5", "--report", "x86.json", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr == ("allinone: error: x86.json: device.machine 'x86_64' does not match profile "
                             "raspberry-pi-5 (target linux-arm64 runs on aarch64 or arm64); pass --force if the "
                             "report really comes from this device\n")
    assert not list(tmp_path.glob("*.yaml"))
    result = _cli("calibrate", "--profile", "raspberry-pi-5", "--report", "x86.json", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "device checks skipped (--force)" in load_profile(tmp_path / "raspberry-pi-5.calibrated.yaml").notes


def test_report_device_checks(tmp_path):
    pi5, iphone = load_profile("raspberry-pi-5"), load_profile("iphone-15")
    check_report_device(_read(report_json(), tmp_path), pi5)
    with pytest.raises(BadInputError, match="threads 2 differs from profile raspberry-pi-5's threads 4"):
        check_report_device(_read(report_json(threads=2), tmp_path), pi5)
    with pytest.raises(BadInputError, match="device.system 'Linux 6.6' does not match profile iphone-15"):
        check_report_device(_read(report_json(machine="arm64", system="Linux 6.6", threads=2), tmp_path), iphone)
    a16 = ["asimd", "asimdhp", "asimddp", "i8mm", "bf16"]
    check_report_device(_read(report_json(machine="iPhone15,4", system="Darwin 23.1.0", threads=2, isa=a16), tmp_path),
                        iphone)
    # an A76 report against the A16's profile: which features differ is named
    with pytest.raises(BadInputError, match=r"device.isa differs from profile iphone-15's isa: the report's CPU "
                                            r"lacks i8mm, bf16 \(profile: asimd, asimdhp, asimddp, i8mm, bf16; report: "
                                            r"asimd, asimdhp, asimddp\)"):
        check_report_device(_read(report_json(machine="iPhone15,4", system="Darwin 23.1.0", threads=2), tmp_path),
                            iphone)


def test_reports_from_cpus_with_different_features_are_not_both_accepted(tmp_path):
    """Two reports for one profile, one from an A76 (dotprod) and one from an A53 (none): refused, naming the
    features that differ, whichever way round; each alone is checked against the profile's isa."""
    pi5 = load_profile("raspberry-pi-5")
    a76 = _read(report_json(), tmp_path)
    a53 = _read(report_json(bits=4, macs=100e6, lengths=((10.0, 400.0),), isa=["asimd"]), tmp_path)
    with pytest.raises(BadInputError) as info:
        calibrate_profile(pi5, [a76, a53])
    assert str(info.value) == (
        f"{a53.path}: device.isa differs from profile raspberry-pi-5's isa: the report's CPU lacks asimdhp, "
        f"asimddp (profile: asimd, asimdhp, asimddp; report: asimd), and these features decide which int8 and "
        f"int4 kernels run; measure on a device with the profile's features, or pass --force if the report "
        f"really comes from this device")
    # A profile without isa (format 1) cannot catch it, but the two reports still disagree with each other.
    v1 = _v1(pi5)
    with pytest.raises(BadInputError, match=r"device.isa differs from .*report-0.json's: its CPU lacks asimdhp, "
                                            r"asimddp; expected reports from one device"):
        calibrate_profile(v1, [a76, a53])
    assert calibrate_profile(pi5, [a76]).profile.isa == tuple(PI5_ISA)
    # --force: the reports' own features become the calibrated profile's (they were measured with them)
    assert calibrate_profile(pi5, [a53], force=True).profile.isa == ("asimd",)


def _v1(profile):
    data = profile.to_dict()
    data.pop("isa")
    data["format_version"] = 1
    return profile_from_dict(data, "v1.yaml")


def test_report_without_device_isa_is_accepted_with_a_warning(tmp_path, caplog):
    old = _read(report_json(isa=None), tmp_path)
    assert old.isa is None and old.cores == 4
    with caplog.at_level("WARNING", logger="allinone.calibration"):
        result = calibrate_profile(load_profile("raspberry-pi-5"), [old])
    assert "records no CPU features (device.isa), so it cannot be matched to profile raspberry-pi-5 on ISA" \
        in caplog.text
    assert result.profile.isa == tuple(PI5_ISA)  # the profile's own, unchanged
    # and the CLI says so on stderr, then calibrates
    (tmp_path / "old.json").write_text(json.dumps(report_json(isa=None)))
    run = _cli("calibrate", "--profile", "raspberry-pi-5", "--report", "old.json", "--out", "pi5.yaml", cwd=tmp_path)
    assert run.returncode == 0 and "cannot be matched to profile raspberry-pi-5 on ISA" in run.stderr


def _read(data: dict, folder: Path):
    path = folder / f"report-{len(list(folder.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return read_report(path)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.__setitem__("kind", "allinone-bundle"), 'kind: expected "allinone-latency-report"'),
    (lambda d: d.__setitem__("format_version", 99), "format_version: expected 1"),  # then the versions read
    (lambda d: d["device"].pop("isa"), "device.isa: missing"),
    (lambda d: d["device"].__setitem__("isa", ["dotprod"]), "device.isa[0]: unknown CPU feature 'dotprod'"),
    (lambda d: d["device"].__setitem__("isa", ["avx512vnni"]), "did you mean avx512_vnni?"),
    (lambda d: d.__setitem__("measured", False), "measured: expected true"),
    (lambda d: d["device"].pop("machine"), "device.machine: missing"),
    (lambda d: d["bundle"].__setitem__("weight_bits", 6), "bundle.weight_bits: expected 32, 8 or 4, got 6"),
    (lambda d: d["latency"][0].__setitem__("p50_ms", "fast"), "latency[0].p50_ms: expected a number"),
    (lambda d: d.__setitem__("latency", []), "latency: expected a non-empty list"),
    (lambda d: d.__setitem__("threads", 2.5), "threads: expected an integer, got 2.5"),
])
def test_bad_report_gives_one_line(tmp_path, mutate, expected):
    data = report_json()
    mutate(data)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError) as info:
        read_report(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_calibration_fits_several_reports_and_precisions(tmp_path):
    reports = [_read(report_json(bits=8, lengths=((10.0, 260.0),)), tmp_path),
               _read(report_json(bits=4, macs=100e6, lengths=((10.0, 150.0),)), tmp_path),
               _read(report_json(bits=8, macs=60e6, lengths=((10.0, 100.0),)), tmp_path)]
    result = calibrate_profile(load_profile("raspberry-pi-5"), reports, today=datetime.date(2026, 12, 1))
    profile = result.profile
    assert profile.latency_model.date == "2026-12-01" and len(profile.latency_model.citations) == 3
    assert profile.predict_latency_ms(172.2e9 / 100, 8) == pytest.approx(260.0, rel=0.01)
    assert profile.predict_latency_ms(1e9, 4) == pytest.approx(150.0, rel=0.01)
    assert profile.latency_model.uncertainty_pct >= 10
    assert profile_from_dict(yaml.safe_load(yaml.safe_dump(profile.to_dict()))) == profile


# ---- measurement on the host (lowers a program: slow) -----------------------------------------------------------


@pytest.mark.slow
def test_planned_activations_timing_and_runtime_overhead_of_a_lowered_program(tmp_path):
    from allinone.data.tokenizer import CharTokenizer
    from allinone.latency import planned_activation_bytes, runtime_overhead_bytes, time_program, tiny_program

    pte = tiny_program(tmp_path)
    assert tiny_program(tmp_path) == pte  # cached: the second call does not lower again
    activations = planned_activation_bytes(pte)
    # The output log-probs of a 30 s input are planned memory: 748 frames x vocabulary x float32.
    assert activations >= 748 * len(CharTokenizer()) * 4
    timing = time_program(pte, threads=1, audio_s=2.0, runs=3)
    assert len(timing.times_ms) == 3 and 0 < timing.min_ms <= timing.p50_ms and timing.first_run_ms > 0
    overhead, timing = runtime_overhead_bytes(pte, threads=1, audio_s=2.0)
    assert overhead == timing.peak_rss_bytes - len(pte) - activations and 50 * MIB < overhead < 2048 * MIB
    with pytest.raises(BadInputError, match="not an ExecuTorch program"):
        planned_activation_bytes(b"not a program at all")


def test_cli_calibrate_accepts_a_report_of_an_exported_bundle(tmp_path):
    """`allinone export` bundles carry no profile; calibrate names the profile itself, so their reports fit too."""
    (tmp_path / "report.json").write_text(json.dumps(report_json(profile=None)))
    result = _cli("calibrate", "--profile", "raspberry-pi-5", "--report", "report.json", "--out", "pi5.yaml",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_profile(tmp_path / "pi5.yaml").latency_model.overhead_ms == pytest.approx(10.0, abs=0.01)
