"""Device profiles: every shipped profile validates, and every kind of bad file gives one clear line."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from allinone.errors import BadInputError
from allinone.profiles import (
    list_profiles, load_profile, predict_latency_ms, predict_rtf, profile_from_dict,
    schema_rows, validate_profile_file,
)

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("allinone")  # the console script of the venv running the tests
REQUIRED = {"pixel-8", "galaxy-a14", "iphone-15", "raspberry-pi-5", "raspberry-pi-zero-2w", "jetson-orin-nano",
            "galaxy-watch4", "host-x86_64"}


def _valid() -> dict:
    """A valid profile as parsed YAML, independent of the shipped files."""
    return {
        "format_version": 1, "name": "test-device", "description": "a test device", "target": "linux-arm64",
        "backend": "xnnpack", "threads": 4, "weight_bits": [32, 8, 4],
        "memory": {"max_model_mib": 100, "max_peak_rss_mib": 200, "runtime_overhead_mib": 50},
        "latency": {"max_rtf": 0.5, "reference_audio_s": 10},
        "latency_model": {"overhead_ms": 5, "throughput_gmacs": {"fp32": 10, "int8": 40, "int4": 50},
                          "workload_factor": 0.5, "source": "published", "citations": ["a paper"],
                          "uncertainty_pct": 20},
        "notes": "",
    }


def _error(data: dict, where: str = "dev.yaml") -> str:
    with pytest.raises(BadInputError) as info:
        profile_from_dict(data, where)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{where}: ")
    return message


# ---- shipped profiles ---------------------------------------------------------------------------------------


def test_required_devices_are_shipped():
    assert REQUIRED <= set(list_profiles())
    # the installed package data and the repo folder are the same set of files
    assert set(list_profiles()) == {p.stem for p in (REPO / "device_profiles").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_profile_validates_and_round_trips(name):
    by_name = load_profile(name)
    by_path = validate_profile_file(REPO / "device_profiles" / f"{name}.yaml")
    assert by_name == by_path and by_name.name == name
    assert profile_from_dict(by_name.to_dict()) == by_name
    assert profile_from_dict(yaml.safe_load(yaml.safe_dump(by_name.to_dict()))) == by_name
    model = by_name.latency_model
    assert model.citations and all(c.strip() for c in model.citations)
    for bits in by_name.weight_bits:  # every allowed precision can be predicted
        assert by_name.predict_latency_ms(1e9, bits) > model.overhead_ms


def test_shipped_profiles_reflect_their_devices():
    zero, watch, host = load_profile("raspberry-pi-zero-2w"), load_profile("galaxy-watch4"), load_profile("host-x86_64")
    assert zero.memory.max_peak_rss_mib < 512 and 32 not in zero.weight_bits
    assert watch.threads == 2 and 32 not in watch.weight_bits
    assert host.target == "linux-x86_64" and host.threads == 2 and host.latency_model.source == "measured"
    assert load_profile("iphone-15").target == "ios-arm64"
    assert load_profile("jetson-orin-nano").threads == 6
    # a faster device predicts a lower latency for the same int8 work
    assert load_profile("raspberry-pi-5").predict_latency_ms(1e9, 8) < zero.predict_latency_ms(1e9, 8)


def test_load_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(yaml.safe_dump(_valid()))
    assert load_profile(str(path)).name == "test-device"
    assert load_profile(path).memory.max_peak_rss_mib == 200.0
    with pytest.raises(BadInputError, match=r"unknown device profile 'pixel8'; did you mean pixel-8\?"):
        load_profile("pixel8")
    with pytest.raises(BadInputError, match=r"no such file"):
        load_profile(tmp_path / "missing.yaml")


# ---- the latency model --------------------------------------------------------------------------------------


def test_latency_model_formula():
    p = profile_from_dict(_valid())
    # 5 ms + 2e9 MACs / (40 GMAC/s * 0.5 * 1e6 MAC/ms per GMAC/s) = 5 + 100 ms
    assert predict_latency_ms(p, 2e9, 8) == pytest.approx(105.0)
    assert predict_latency_ms(p, 2e9, 32) == pytest.approx(5 + 2e9 / (10 * 0.5 * 1e6))
    # RTF at the 10 s reference: (5 + 1e9*10 / 2e7) ms / 10000 ms
    assert predict_rtf(p, 1e9, 4) == pytest.approx((5 + 1e10 / (50 * 0.5 * 1e6)) / 10_000)
    assert p.predict_latency_ms(0, 8) == 5.0


def test_latency_model_without_a_figure_for_the_bits():
    data = _valid()
    data["weight_bits"] = [8]
    del data["latency_model"]["throughput_gmacs"]["int4"]
    p = profile_from_dict(data)
    with pytest.raises(BadInputError, match=r"no figure for 4-bit weights; expected one of fp32, int8"):
        p.predict_latency_ms(1e9, 4)
    with pytest.raises(BadInputError, match="macs"):
        p.predict_latency_ms(-1, 8)


# ---- validation errors ----------------------------------------------------------------------------------------

def _set(path: str, value):
    def mutate(d):
        *parents, leaf = path.split(".")
        for key in parents:
            d = d[key]
        d[leaf] = value
    return mutate


def _drop(path: str):
    def mutate(d):
        *parents, leaf = path.split(".")
        for key in parents:
            d = d[key]
        del d[leaf]
    return mutate


def _rename(path: str, new: str):
    def mutate(d):
        *parents, leaf = path.split(".")
        for key in parents:
            d = d[key]
        d[new] = d.pop(leaf)
    return mutate


@pytest.mark.parametrize("mutate, expected", [
    # unknown keys, with did-you-mean at the same level and across levels
    (_rename("memory.max_model_mib", "max_modle_mib"),
     "memory.max_modle_mib: unknown key; did you mean memory.max_model_mib?"),
    (_rename("memory.max_model_mib", "max_model_mb"),
     "memory.max_model_mb: unknown key; did you mean memory.max_model_mib?"),
    (_rename("threads", "thread"), "thread: unknown key; did you mean threads?"),
    (lambda d: d.__setitem__("max_rtf", d["latency"].pop("max_rtf")),
     "max_rtf: unknown key; did you mean latency.max_rtf?"),
    (_set("latency_model.throughput_gmacs.int16", 3),
     "latency_model.throughput_gmacs.int16: unknown key; did you mean latency_model.throughput_gmacs.int8?"),
    (_set("zzzz", 1), "zzzz: unknown key; expected one of format_version, name, description, target"),
    # wrong types and units
    (_set("memory.max_model_mib", "300 MB"),
     "memory.max_model_mib: expected a number of MiB, got the string '300 MB'; write a plain number, "
     "the unit is in the key name"),
    (_set("latency.reference_audio_s", "10s"), "latency.reference_audio_s: expected a number of seconds, got"),
    (_set("latency.max_rtf", "5e-1"), "latency.max_rtf: expected a number, got the string '5e-1'; write the "
                                      "number unquoted, with a decimal point"),
    (_set("threads", 2.5), "threads: expected an integer, got 2.5"),
    (_set("threads", True), "threads: expected an integer, got True"),
    (_set("weight_bits", "8"), "weight_bits: expected a list of integers, got the string '8'"),
    (_set("memory", 400), "memory: expected a mapping of keys, got 400"),
    (_set("backend", "xnnpak"), "backend: expected one of xnnpack, portable, got the string 'xnnpak'; "
                                "did you mean xnnpack?"),
    (_set("target", "android"), "target: expected one of android-arm64, ios-arm64, linux-arm64, linux-x86_64"),
    (_set("notes", None), "notes: expected a string, got nothing (null)"),
    # missing keys
    (_drop("latency.max_rtf"), "latency.max_rtf: missing; expected largest real-time factor allowed"),
    (_drop("memory"), "memory: missing; expected memory budgets"),
    (_drop("format_version"), "format_version: missing; expected the schema version (3; 1 and 2 are still read)"),
    (_drop("latency_model.throughput_gmacs.int4"),
     "latency_model.throughput_gmacs.int4: missing; weight_bits allows 4, so the latency model needs its throughput"),
    (_set("latency_model.source", "measured"),
     "latency_model.date: missing; expected the date (YYYY-MM-DD) the numbers were measured"),
    # out of range
    (_set("threads", 0), "threads: expected an integer >= 1 and <= 256, got 0"),
    (_set("memory.max_peak_rss_mib", -1), "memory.max_peak_rss_mib: expected a number of MiB > 0, got -1"),
    (_set("memory.max_model_mib", 500), "memory.max_model_mib: expected at most memory.max_peak_rss_mib (200), "
                                        "got 500"),
    (_set("memory.runtime_overhead_mib", 200), "memory.runtime_overhead_mib: expected less than"),
    (_set("latency.reference_audio_s", 60), "latency.reference_audio_s: expected a number of seconds >= 0.5 and "
                                            "<= 30, got 60"),
    (_set("latency_model.workload_factor", 1.5), "latency_model.workload_factor: expected a number > 0 and <= 1"),
    (_set("latency.max_rtf", float("inf")), "latency.max_rtf: expected a number, got inf"),
    (_set("weight_bits", [32, 16]), "weight_bits: expected a non-empty list of distinct values from 32, 8, 4, "
                                    "got [32, 16]"),
    (_set("weight_bits", [8, 8]), "weight_bits: expected a non-empty list of distinct values"),
    (_set("weight_bits", []), "weight_bits: expected a non-empty list of distinct values"),
    (_set("latency_model.citations", []), "latency_model.citations: expected a non-empty list"),
    (_set("latency_model.date", "25/11/2026"), "latency_model.date: expected a date YYYY-MM-DD"),
    (_set("name", "Pixel 8"), "name: expected lower-case letters, digits"),
    (_set("description", " "), "description: expected a non-empty string"),
    (_set("format_version", 4), "format_version: expected 1, 2 or 3 (the versions this allinone reads), got 4"),
    (_set("isa", ["asimd"]), "isa: not in format_version 1; expected format_version: 2 or later in a profile that "
                             "uses it"),
    (_set("latency_model.size_term_ms", {"int8": 1.0}), "latency_model.size_term_ms: not in format_version 1; "
                                                         "expected format_version: 3 or later"),
])
def test_bad_profile_gives_one_line_naming_file_and_key(mutate, expected):
    data = copy.deepcopy(_valid())
    mutate(data)
    message = _error(data)
    assert message.startswith(f"dev.yaml: {expected}"), message


def test_newer_format_version_is_reported_before_its_unknown_keys():
    data = _valid()
    data.update(format_version=4, a_key_from_the_future=1)
    assert _error(data) == "dev.yaml: format_version: expected 1, 2 or 3 (the versions this allinone reads), got 4"


# ---- CPU features (format 2) --------------------------------------------------------------------------------


def _v2(**changes) -> dict:
    data = {**_valid(), "format_version": 2, "isa": ["asimd", "asimddp"]}
    data.update(changes)
    return data


@pytest.mark.parametrize("isa, expected", [
    (["asimd", "dotprod"], "isa[1]: unknown feature 'dotprod'; did you mean asimddp? (Linux's name, as reports "
                           "record it)"),
    (["asimd", "i8m"], "isa[1]: unknown feature 'i8m'; did you mean i8mm? expected one of asimd, asimdhp, asimddp, "
                       "i8mm, bf16, sve, sve2, sme"),
    (["avx512_vnni"], "isa[0]: 'avx512_vnni' is an x86_64 feature, but target linux-arm64 is arm64; expected one of "
                      "asimd, asimdhp, asimddp, i8mm, bf16, sve, sve2, sme"),
    (["asimd", "asimd"], "isa[1]: 'asimd' is listed twice"),
    (["quantum"], "isa[0]: unknown feature 'quantum'; expected one of asimd, asimdhp"),
    ("asimd", "isa: expected a list of strings, got the string 'asimd'"),
])
def test_unknown_isa_feature_gives_one_line_with_did_you_mean(isa, expected):
    assert _error(_v2(isa=isa)).startswith(f"dev.yaml: {expected}")


def test_x86_aliases_and_version_2_keys_round_trip():
    data = _v2(target="linux-x86_64", isa=["avx2", "avx512vnni"])
    assert _error(data) == ("dev.yaml: isa[1]: unknown feature 'avx512vnni'; did you mean avx512_vnni? (Linux's "
                            "name, as reports record it)")
    data = _v2(target="linux-x86_64", isa=["fma", "avx2"])
    data["latency_model"].update(source="measured", date="2026-12-01", block_ms_per_s=0.05,
                                 device={"cpu": "AMD EPYC 7B13", "machine": "x86_64", "system": "Linux 6.1", "cores": 2},
                                 fit={"systems": 9, "max_error_pct": 4.2, "loo_max_error_pct": 7.9})
    p = profile_from_dict(data)
    assert p.isa == ("fma", "avx2") and p.latency_model.device.cpu == "AMD EPYC 7B13"
    assert p.latency_model.fit.loo_max_error_pct == 7.9 and p.latency_model.fit.loo_mean_error_pct is None
    assert profile_from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict()))) == p
    # the per-block term adds blocks x seconds: 12 blocks on 10 s at 0.05 ms = 6 ms
    assert p.predict_latency_ms(1e9, 8, blocks=12, audio_s=10) == pytest.approx(p.predict_latency_ms(1e9, 8) + 6.0)
    assert p.predict_rtf(1e8, 8, blocks=12) == pytest.approx(p.predict_latency_ms(1e9, 8, blocks=12, audio_s=10) / 1e4)
    data["latency_model"]["fit"] = {"systems": 9, "max_err_pct": 1}
    assert _error(data) == "dev.yaml: latency_model.fit.max_err_pct: unknown key; did you mean latency_model.fit.max_error_pct?"


def test_empty_isa_means_none_of_the_recorded_features():
    assert profile_from_dict(_v2(isa=[])).isa == ()
    assert profile_from_dict(_valid()).isa is None  # format 1: not recorded


PHONES_AND_BOARDS = sorted(REQUIRED - {"host-x86_64"})


@pytest.mark.parametrize("name", PHONES_AND_BOARDS)
def test_shipped_device_names_its_isa_with_a_source(name):
    """Every phone and board says which CPU features its figures assume, and cites where that comes from."""
    profile = load_profile(name)
    assert profile.format_version == 2 and profile.isa is not None and "asimd" in profile.isa
    cited = [c for c in profile.latency_model.citations if c.startswith("isa ")]
    assert len(cited) == 1 and ", ".join(profile.isa) in cited[0] and "Armv" in cited[0], name


def test_shipped_isa_matches_the_cores():
    isa = {name: set(load_profile(name).isa) for name in PHONES_AND_BOARDS}
    assert isa["raspberry-pi-zero-2w"] == {"asimd"}  # Cortex-A53: Armv8.0, no dotprod
    for name in ("raspberry-pi-5", "jetson-orin-nano", "galaxy-a14", "galaxy-watch4"):  # A76 / A78AE / A55
        assert "asimddp" in isa[name] and "i8mm" not in isa[name]
    assert {"asimddp", "i8mm"} <= isa["pixel-8"] and {"asimddp", "i8mm"} <= isa["iphone-15"]


def test_valid_extras_are_accepted():
    data = _valid()
    del data["notes"]  # optional
    data["latency_model"].update(source="calibrated", date="2026-01-02")
    data["weight_bits"] = [8]
    del data["latency_model"]["throughput_gmacs"]["fp32"]  # only allowed precisions need a figure
    p = profile_from_dict(data)
    assert p.notes == "" and p.weight_bits == (8,) and p.latency_model.throughput_gmacs.fp32 is None
    assert "fp32" not in p.to_dict()["latency_model"]["throughput_gmacs"]


def test_file_level_errors(tmp_path):
    good = yaml.safe_dump(_valid(), sort_keys=False)
    dup = tmp_path / "dup.yaml"
    dup.write_text(good + "threads: 8\n")
    with pytest.raises(BadInputError, match=r"dup\.yaml: not valid YAML at line \d+: duplicate key 'threads'"):
        validate_profile_file(dup)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(BadInputError, match=r"broken\.yaml: not valid YAML at line 2"):
        validate_profile_file(broken)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(BadInputError, match=r"list\.yaml: \(top level\): expected a mapping of keys"):
        validate_profile_file(top)
    dated = tmp_path / "dated.yaml"  # an unquoted date is a YAML date object; accepted as the string
    dated.write_text(good.replace("source: published", "source: measured\n  date: 2026-11-25"))
    assert validate_profile_file(dated).latency_model.date == "2026-11-25"


# ---- docs -------------------------------------------------------------------------------------------------------


def test_formats_doc_lists_every_profile_key():
    doc = (REPO / "docs" / "formats.md").read_text()
    section = doc.split("## Device profile (format_version 3)")[1].split("\n## ")[0]
    keys = re.findall(r"^\| `([a-z0-9_.]+)` \|", section, flags=re.M)
    assert keys == [row[0] for row in schema_rows()]


# ---- the CLI, in a subprocess -------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_validate_shipped_profiles():
    files = sorted(str(p) for p in (REPO / "device_profiles").glob("*.yaml"))
    result = _cli("profiles", "validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(files) and result.stderr == ""


def test_cli_misspelt_key_gives_the_documented_error(tmp_path):
    text = yaml.safe_dump(_valid(), sort_keys=False).replace("max_model_mib", "max_modle_mib")
    (tmp_path / "bad.yaml").write_text(text)
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(_valid()))
    result = _cli("profiles", "validate", "bad.yaml", "good.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "ok: good.yaml (test-device)\n"
    line = "allinone: error: bad.yaml: memory.max_modle_mib: unknown key; did you mean memory.max_model_mib?"
    assert result.stderr == line + "\n"
    assert line in (REPO / "docs" / "formats.md").read_text()  # the documented example is the real output


def test_cli_list_and_show():
    listed = _cli("profiles", "list")
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in REQUIRED)
    shown = _cli("profiles", "show", "raspberry-pi-5")
    assert shown.returncode == 0
    assert profile_from_dict(yaml.safe_load(shown.stdout)) == load_profile("raspberry-pi-5")
    unknown = _cli("profiles", "show", "raspbery-pi-5")
    assert unknown.returncode == 2 and "did you mean raspberry-pi-5?" in unknown.stderr
    assert len(unknown.stderr.splitlines()) == 1
