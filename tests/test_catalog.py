"""Computing a checkpoint's catalog (sizes, MACs, dev WER, activation memory), incremental reuse, measured
latency from reports, and `allinone catalog` / `allinone select --checkpoint` end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.catalog import CATALOG_FILE, Catalog, CatalogEntry, MeasuredLatency, load_catalog, save_catalog
from allinone.catalog_compute import add_reports, compute_catalog, manifest_sha256
from allinone.errors import BadInputError

CLI = Path(sys.executable).with_name("allinone")


def _train_tiny(synth_corpus: Path, out: Path, steps: int) -> Path:
    """The tiny recipe trained for `steps` steps: untrained-quality WERs, real sizes."""
    from allinone.train.recipe import load_recipe
    from allinone.train.trainer import train

    train(load_recipe("tiny"), synth_corpus / "train.jsonl", synth_corpus / "dev.jsonl", out, max_steps=steps,
          progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(synth_corpus, tmp_path_factory) -> Path:
    return _train_tiny(synth_corpus, tmp_path_factory.mktemp("ckpt") / "tiny", steps=2)


@pytest.fixture()
def checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A private copy, so each test starts without a catalog."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


class _CountingEvaluate:
    """Wraps allinone.evaluate.evaluate to record which systems each call scored."""

    def __init__(self, monkeypatch):
        import allinone.evaluate

        self.calls: list[list[str]] = []
        real = allinone.evaluate.evaluate

        def counting(model, specs, *args, **kwargs):
            specs = list(specs)
            self.calls.append([s.id for s in specs])
            return real(model, specs, *args, **kwargs)
        monkeypatch.setattr(allinone.evaluate, "evaluate", counting)


def test_catalog_measures_every_target(checkpoint, synth_corpus):
    from allinone.checkpoint import load_checkpoint
    from allinone.eval_run import evaluate_checkpoint
    from allinone.size import subnet_size

    dev = synth_corpus / "dev.jsonl"
    run = compute_catalog(checkpoint, dev, activations=False, progress=False, now="2026-01-01T00:00:00Z")
    ckpt = load_checkpoint(checkpoint)
    targets = [s.id for s in ckpt.targets]
    assert [e.subnet for e in run.catalog.entries] == targets and run.evaluated == tuple(targets)
    assert run.path == checkpoint / CATALOG_FILE and load_catalog(run.path) == run.catalog
    wers = {r.subnet: r.wer for r in evaluate_checkpoint(checkpoint, dev, hyps_dir=checkpoint / "h", progress=False)}
    for spec in ckpt.targets:
        e, size = run.catalog.get(spec.id), subnet_size(ckpt.model, spec)
        assert (e.params, e.weight_bytes, e.macs_per_second) == (size.params, size.weight_bytes, size.macs_per_second)
        assert e.weight_bits == spec.weight_bits and e.wer == wers[spec.id]
        assert e.provenance == {"evaluated": "2026-01-01T00:00:00Z"} and e.activation_bytes is None
        assert (checkpoint / "eval" / "dev" / f"{spec.id}.hyps.jsonl").is_file()  # as `allinone eval` writes them
    meta = run.catalog.meta
    assert meta["weights_sha256"] == ckpt.config["weights_sha256"] and meta["manifest_sha256"] == manifest_sha256(dev)
    assert meta["manifest"] == str(dev) and meta["updated"] == "2026-01-01T00:00:00Z"


def _dev_subset(synth_corpus: Path, n: int, path: Path) -> Path:
    """The first `n` dev utterances as a manifest at `path` (absolute audio paths: it lives elsewhere)."""
    rows = [json.loads(line) for line in (synth_corpus / "dev.jsonl").read_text().splitlines() if line.strip()][:n]
    for row in rows:
        row["audio_filepath"] = str(synth_corpus / row["audio_filepath"])
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_catalog_reuses_measured_systems_until_weights_or_dev_set_change(checkpoint, synth_corpus, monkeypatch):
    dev = _dev_subset(synth_corpus, 2, checkpoint / "dev-2.jsonl")  # 24 systems are scored: keep the set small
    first = compute_catalog(checkpoint, dev, activations=False, progress=False, now="T1").catalog
    evaluate = _CountingEvaluate(monkeypatch)

    again = compute_catalog(checkpoint, dev, activations=False, progress=False, now="T2")
    assert evaluate.calls == [] and again.evaluated == () and len(again.reused) == len(first.entries)
    assert [e.provenance["evaluated"] for e in again.catalog.entries] == ["T1"] * len(first.entries)
    assert [e.wer for e in again.catalog.entries] == [e.wer for e in first.entries]

    every = compute_catalog(checkpoint, dev, all_systems=True, activations=False, progress=False, now="T3")
    targets = {e.subnet for e in first.entries}
    assert len(every.catalog.entries) == 24 and evaluate.calls == [list(every.evaluated)]
    assert not targets & set(every.evaluated)  # only the new systems were scored
    assert {e.subnet for e in every.catalog.entries if e.provenance["evaluated"] == "T1"} == targets

    # Another dev set: every WER is stale; the targets asked for are scored again, the rest leave the catalog.
    smaller = _dev_subset(synth_corpus, 1, checkpoint / "dev-1.jsonl")
    changed = compute_catalog(checkpoint, smaller, activations=False, progress=False, now="T4")
    assert set(changed.dropped) == {e.subnet for e in every.catalog.entries}
    assert {e.subnet for e in changed.catalog.entries} == targets == set(changed.evaluated)
    assert all(e.provenance["evaluated"] == "T4" for e in changed.catalog.entries)


def test_interrupted_all_systems_run_resumes_from_the_saved_chunks(checkpoint, synth_corpus, monkeypatch):
    import allinone.catalog_compute
    import allinone.evaluate

    dev = _dev_subset(synth_corpus, 2, checkpoint / "dev-2.jsonl")
    monkeypatch.setattr(allinone.catalog_compute, "EVAL_CHUNK", 5)
    real, calls = allinone.evaluate.evaluate, []

    def interrupted_after_two_chunks(model, specs, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append([s.id for s in specs])
        return real(model, specs, *args, **kwargs)
    monkeypatch.setattr(allinone.evaluate, "evaluate", interrupted_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        compute_catalog(checkpoint, dev, all_systems=True, activations=False, progress=False, now="T1")
    saved = load_catalog(checkpoint / CATALOG_FILE)
    assert [e.subnet for e in saved.entries] == calls[0] + calls[1] and all(e.wer is not None for e in saved.entries)

    monkeypatch.setattr(allinone.evaluate, "evaluate", real)
    resumed = compute_catalog(checkpoint, dev, all_systems=True, activations=False, progress=False, now="T2")
    assert set(resumed.reused) == set(calls[0] + calls[1]) and len(resumed.catalog.entries) == 24
    assert not set(resumed.evaluated) & set(resumed.reused)


def test_measured_latency_from_a_report_is_checked_and_kept(tmp_path):
    from allinone.latency import read_report

    catalog = Catalog((CatalogEntry("d2-f128-h2-w8", 8, 177_533, 937_448, 28.2e6, 0.4),
                       CatalogEntry("d1-f64-h1-w4", 4, 89_181, 804_412, 24.9e6, 0.6)))
    subnet = catalog.entries[0].subnet
    report = _report(tmp_path / "r.json", subnet, machine="x86_64", profile="host-x86_64", threads=2)
    updated = add_reports(catalog, [read_report(report)])
    m = updated.get(subnet).measured_latency
    assert [(x.profile, x.audio_s, x.p50_ms) for x in m] == [("host-x86_64", 2.0, 9.0), ("host-x86_64", 10.0, 31.0)]
    assert m[1].rtf == pytest.approx(0.0031) and m[1].report == str(report) and m[1].machine == "x86_64"
    save_catalog(updated, tmp_path / "c.json")
    assert load_catalog(tmp_path / "c.json") == updated  # measured latency round-trips through the file
    # a newer report of the same profile and length replaces the old figure
    newer = _report(tmp_path / "r2.json", subnet, machine="x86_64", profile="host-x86_64", threads=2, ms=33.0)
    again = add_reports(updated, [read_report(newer)]).get(subnet).measured_latency
    assert [x.p50_ms for x in again if x.audio_s == 10.0] == [33.0] and len(again) == 2

    arm = _report(tmp_path / "arm.json", subnet, machine="aarch64", profile="host-x86_64", threads=2)
    with pytest.raises(BadInputError, match="device.machine 'aarch64' does not match profile host-x86_64"):
        add_reports(catalog, [read_report(arm)])
    mine = _report(tmp_path / "mine.json", subnet, machine="x86_64", profile="my-board", threads=2)
    with pytest.raises(BadInputError, match="'my-board' is not a shipped profile"):
        add_reports(catalog, [read_report(mine)])
    assert add_reports(catalog, [read_report(mine)], force=True).get(subnet).measured_latency[0].profile == "my-board"
    other = _report(tmp_path / "o.json", "d9-f64-h1-w8", machine="x86_64", profile="host-x86_64", threads=2)
    with pytest.raises(BadInputError, match="bundle.subnet d9-f64-h1-w8 is not in the catalog"):
        add_reports(catalog, [read_report(other)])


def _report(path: Path, subnet: str, *, machine: str, profile: str, threads: int, ms: float = 31.0) -> Path:
    bits = int(subnet.rsplit("w", 1)[1])
    path.write_text(json.dumps({
        "format_version": 1, "kind": "allinone-latency-report", "measured": True, "date": "2026-11-25T12:00:00Z",
        "device": {"hostname": "h", "machine": machine, "system": "Linux 6.1.0", "cpu": "Xeon", "cores": 2},
        "runner": "python",
        "bundle": {"path": "b", "subnet": subnet, "weight_bits": bits, "macs_per_second": 28e6, "pte_bytes": 900_000,
                   "pte_sha256": "0" * 64, "profile": profile},
        "threads": threads, "runs": 10, "load_ms": 3.0, "first_run_ms": 20.0,
        "latency": [{"audio_s": a, "p50_ms": v, "p90_ms": v, "min_ms": v, "max_ms": v, "mean_ms": v,
                     "rtf": v / a / 1000} for a, v in ((2.0, 9.0), (10.0, ms))],
        "peak_rss_bytes": 400_000_000}))
    return path


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.__setitem__("provenance", {"evaluated": 3}), "entries[0]: provenance: expected an object of string values"),
    (lambda e: e["measured_latency"][0].pop("p50_ms"), "entries[0]: measured_latency[0]: p50_ms: missing"),
    (lambda e: e["measured_latency"][0].__setitem__("audio_s", 0), "measured_latency[0]: audio_s: expected a number > 0"),
    (lambda e: e.__setitem__("measured_latency", {}), "entries[0]: measured_latency: expected a list, got dict"),
])
def test_bad_provenance_or_measured_latency_gives_one_line(tmp_path, mutate, expected):
    m = MeasuredLatency("pixel-8", "aarch64", "Tensor G3", "cpp", 4, 10.0, 120.0, "2026-11-25", "r.json")
    data = Catalog((CatalogEntry("d6", 8, 10, 10, 1e6, 0.1, provenance={"evaluated": "T"}, measured_latency=(m,)),)).to_dict()
    mutate(data["entries"][0])
    (tmp_path / "catalog.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError) as info:
        load_catalog(tmp_path / "catalog.json")
    assert str(info.value).startswith(str(tmp_path / "catalog.json")) and expected in str(info.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_catalog_then_select_by_checkpoint(checkpoint, synth_corpus, tmp_path):
    result = _cli("select", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert f"{checkpoint / 'catalog.json'}: no catalog yet; expected one made by `allinone catalog --checkpoint " \
           f"{checkpoint} --manifest DEV`" in result.stderr

    result = _cli("catalog", "--checkpoint", str(checkpoint), "--manifest", str(synth_corpus / "dev.jsonl"),
                  "--no-activations", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "evaluated 6, reused 0, activations measured on 0" in result.stdout and "d2-f128-h2-w32" in result.stdout
    catalog = load_catalog(checkpoint / "catalog.json")
    best = min((e for e in catalog.entries), key=lambda e: (e.wer, e.model_bytes, e.subnet))

    result = _cli("select", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["subnet"] == best.subnet and data["wer"] == best.wer and data["bytes"] == best.weight_bytes
    assert data["latency"]["kind"] == "predicted" and data["latency"]["measured"] is False
    assert data["latency"]["predicted"]["ms"] == pytest.approx(data["latency"]["ms"])

    # A host report of the chosen system makes its host latency measured, and only on host-x86_64.
    report = _report(tmp_path / "report.json", best.subnet, machine="x86_64", profile="host-x86_64", threads=2)
    result = _cli("catalog", "--checkpoint", str(checkpoint), "--manifest", str(synth_corpus / "dev.jsonl"),
                  "--no-activations", "--report", str(report), cwd=tmp_path)
    assert result.returncode == 0 and "evaluated 0, reused 6" in result.stdout, result.stderr
    host = json.loads(_cli("select", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", "--json",
                           cwd=tmp_path).stdout)
    assert host["subnet"] == best.subnet
    assert host["latency"]["kind"] == "measured" and host["latency"]["measured"] is True
    assert host["latency"]["ms"] == 31.0 and host["latency"]["device"]["report"] == str(report)
    assert host["latency"]["predicted"]["ms"] != 31.0  # the prediction is still given, labelled as such
    pi = json.loads(_cli("select", "--checkpoint", str(checkpoint), "--profile", "raspberry-pi-5", "--json",
                         cwd=tmp_path).stdout)
    assert pi["latency"]["kind"] == "predicted"
    table = _cli("select", "--checkpoint", str(checkpoint), "--profile", "host-x86_64", "--explain", cwd=tmp_path)
    assert table.stdout.startswith(f"{best.subnet}: WER {best.wer:.2%}") and "measured RTF 0.003" in table.stdout
    assert "0.003m" in table.stdout


@pytest.mark.slow
def test_catalog_measures_activations_on_one_system_per_precision(checkpoint, synth_corpus, monkeypatch):
    import allinone.export

    dev = synth_corpus / "dev.jsonl"
    run = compute_catalog(checkpoint, dev, progress=False)
    by_bits: dict[int, list[CatalogEntry]] = {}
    for e in run.catalog.entries:
        by_bits.setdefault(e.weight_bits, []).append(e)
    assert len(run.measured) == len(by_bits) == 3
    for bits, entries in by_bits.items():
        probe = min(entries, key=lambda e: (e.macs_per_second, e.weight_bytes, e.subnet))
        assert probe.subnet in run.measured and probe.provenance["activation_bytes"] == "measured"
        assert probe.pte_bytes > probe.weight_bytes  # the program carries its weights plus its graph
        for e in entries:
            assert e.activation_bytes == probe.activation_bytes > 0
            if e is not probe:
                assert e.provenance["activation_bytes"] == f"predicted from {probe.subnet}" and e.pte_bytes is None
    assert "smallest system of each weight precision" in run.catalog.meta["activation_rule"]
    by_id = {e.subnet: e for e in run.catalog.entries}

    def no_lowering(*args, **kwargs):
        raise AssertionError("lowered again")
    monkeypatch.setattr(allinone.export, "export_subnet", no_lowering)
    again = compute_catalog(checkpoint, dev, progress=False)
    assert again.measured == () and again.catalog.entries == run.catalog.entries

    # New weights of the same supernet (a fresh pack: no catalog yet) measure again from the cached programs,
    # which are keyed by architecture, so nothing is lowered.
    retrained = _train_tiny(synth_corpus, checkpoint.parent / "retrained", steps=3)
    repacked = compute_catalog(retrained, dev, progress=False)
    assert repacked.catalog.meta["weights_sha256"] != run.catalog.meta["weights_sha256"]
    assert sorted(repacked.measured) == sorted(repacked.from_cache) == sorted(run.measured)  # from the cache
    for e in repacked.catalog.entries:
        assert (e.activation_bytes, e.pte_bytes) == (by_id[e.subnet].activation_bytes, by_id[e.subnet].pte_bytes)


def test_report_of_an_exported_bundle_names_no_device_for_the_catalog(tmp_path):
    from allinone.latency import read_report

    catalog = Catalog((CatalogEntry("d2-f128-h2-w8", 8, 177_533, 937_448, 28.2e6, 0.4),))
    path = _report(tmp_path / "r.json", "d2-f128-h2-w8", machine="x86_64", profile=None, threads=2)
    with pytest.raises(BadInputError, match="exported without a device profile"):
        add_reports(catalog, [read_report(path)], force=True)


def test_selecting_imports_neither_evaluation_nor_lowering():
    """The catalog format lives apart from the code that fills it: `import allinone.select` (what a selection
    reads) loads no lowering, evaluation or quantization code, so it stays fast and light."""
    probe = ("import json, sys; import allinone.select; print(json.dumps(sorted(m for m in sys.modules if m in "
             "('allinone.catalog_compute', 'allinone.export', 'allinone.evaluate', 'allinone.host_timing', "
             "'allinone.quantize', 'executorch', 'torchao'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout) == []
