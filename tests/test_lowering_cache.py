"""The lowering cache (issue 16): a program lowered once is read back with the same bytes; what decides the
bytes (the extracted weights, the spec) decides the key; damaged entries, racing builds, an unwritable cache
or a full disk never leave or use a bad entry; `build --jobs` lowers distinct systems in worker processes."""

import copy
import errno
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import allinone.lowering
import allinone.lowering_cache
from allinone.checkpoint import load_checkpoint
from allinone.lowering import lower_cached, worker_count
from allinone.lowering_cache import LoweringCache
from allinone.spec import SubnetSpec
from conftest import ALLINONE, TINY_OVERFIT, board_profile, clip_catalog_checkpoint, run_allinone

SPEC = SubnetSpec.from_id("d1-f64-h1-w32")  # the tiny fixture's cheapest system to lower


class Lowered(Exception):
    """Raised in place of lowering: proof that the cache missed, without minutes of lowering."""


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(TINY_OVERFIT).model


@pytest.fixture(scope="module")
def warm(tmp_path_factory, model):
    """(a cache holding SPEC lowered once, the bytes that lowering produced)."""
    cache = LoweringCache(tmp_path_factory.mktemp("warm") / "programs")
    first = lower_cached(model, SPEC, cache)
    assert first.cache == "miss" and first.path is not None and first.path.parent == cache.directory
    return cache.directory, first.program.pte


@pytest.fixture
def no_lowering(monkeypatch):
    def refuse(*args, **kwargs):
        raise Lowered()
    monkeypatch.setattr(allinone.lowering, "lower_to_pte", refuse)


def _copy(directory: Path, tmp_path: Path) -> LoweringCache:
    shutil.copytree(directory, tmp_path / "programs")
    return LoweringCache(tmp_path / "programs")


def test_a_second_lowering_reads_the_same_bytes_back(warm, model, no_lowering, caplog):
    directory, fresh = warm
    caplog.set_level(logging.INFO, logger="allinone.lowering")
    again = lower_cached(model, SPEC, LoweringCache(directory))
    assert again.cache == "hit" and again.program.pte == fresh  # no lowering happened (it would raise)
    assert f"lowering cache hit {SPEC.id} ({directory / again.path.name})" in caplog.text
    assert f"lowering {SPEC.id} ..." not in caplog.text
    # what the manifest records comes back with the bytes
    assert again.program.delegated_ops and again.program.partitions >= 1 and "lower" in again.program.seconds
    with torch.no_grad():  # and the eager program verification compares against is this system's
        assert again.program.module(torch.zeros(1, 16000)).shape[-1] == model.cfg.vocab_size


def test_a_changed_kept_weight_or_spec_misses_and_an_unkept_weight_does_not(warm, model, no_lowering):
    cache = LoweringCache(warm[0])
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.blocks[0].ffn1_up.weight[0, 0] += 1e-3  # a unit d1-f64 keeps
    with pytest.raises(Lowered):
        lower_cached(changed, SPEC, cache)
    with pytest.raises(Lowered):
        lower_cached(model, SPEC.with_bits(8), cache)
    unkept = copy.deepcopy(model)
    with torch.no_grad():
        unkept.blocks[1].ffn1_up.weight[0, 0] += 1.0  # block 2: cut away at depth 1
        unkept.blocks[0].ffn1_up.weight[100, 0] += 1.0  # feed-forward unit 101: cut away at width 64
    assert lower_cached(unkept, SPEC, cache).cache == "hit"


def test_a_corrupt_entry_is_reported_and_lowered_again(warm, model, tmp_path, caplog):
    cache = _copy(warm[0], tmp_path)
    (entry,) = cache.directory.iterdir()
    program = entry / "program.pte"
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0xFF
    program.write_bytes(bytes(data))
    caplog.set_level(logging.INFO)
    again = lower_cached(model, SPEC, cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"lowering cache {entry}: corrupt entry (program.pte does not match the sha256 in "
                        f"entry.json); lowering {SPEC.id} again"]
    assert again.cache == "miss" and again.program.pte == warm[1] == program.read_bytes()
    assert cache.load(entry.name, SPEC.id)[0] == warm[1]  # the rebuilt entry is whole again


@pytest.mark.parametrize("damage, problem", [
    (lambda meta: "{not json", "entry.json is not valid JSON"),
    (lambda meta: json.dumps({**meta, "kind": "something else"}), "entry.json is not a lowering cache entry"),
    (lambda meta: json.dumps({**meta, "key": "0" * 64}), "entry.json has format 1 and key 000000000000...; "
                                                          "expected format 1 and this key"),
])
def test_a_foreign_or_unreadable_entry_is_never_used(warm, tmp_path, caplog, damage, problem):
    cache = _copy(warm[0], tmp_path)
    (entry,) = cache.directory.iterdir()
    sidecar = entry / "entry.json"
    sidecar.write_text(damage(json.loads(sidecar.read_text())))
    with caplog.at_level(logging.WARNING):
        assert cache.load(entry.name, SPEC.id) is None
    assert caplog.messages == [f"lowering cache {entry}: corrupt entry ({problem}); lowering {SPEC.id} again"]
    assert not entry.exists() and cache.entries() == []


def test_an_unwritable_cache_warns_once_and_the_program_is_still_built(warm, model, tmp_path, caplog):
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("a file where the cache directory should be")
    cache = LoweringCache(not_a_dir / "programs")
    with caplog.at_level(logging.WARNING):
        built = lower_cached(model, SPEC, cache)
        assert cache.store("f" * 64, b"program", {"subnet": SPEC.id}) is None  # no second warning either
    assert built.cache == "off" and built.program.pte == warm[1]
    assert len(caplog.records) == 1
    assert caplog.messages[0].startswith(f"lowering cache {cache.directory}: cannot write (")
    assert caplog.messages[0].endswith("); building without caching")


def test_a_full_disk_leaves_no_partial_entry(tmp_path, monkeypatch, caplog):
    cache = LoweringCache(tmp_path / "programs")
    real_write = allinone.lowering_cache._write_synced

    def disk_full_at_the_sidecar(path, data):
        if path.name == "entry.json":
            path.write_bytes(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)
    monkeypatch.setattr(allinone.lowering_cache, "_write_synced", disk_full_at_the_sidecar)
    with caplog.at_level(logging.WARNING):
        assert cache.store("a" * 64, b"program bytes", {"subnet": SPEC.id}) is None
    assert caplog.messages == [f"lowering cache {cache.directory}: cannot write (No space left on device); "
                               f"building without caching"]
    assert list(cache.directory.iterdir()) == []  # neither the entry nor its staging folder


def test_two_exports_racing_into_one_cache_both_succeed(warm, tmp_path):
    cache = tmp_path / "shared-cache"
    procs = [subprocess.Popen([ALLINONE, "export", "--checkpoint", str(TINY_OVERFIT), "--subnet", SPEC.id,
                               "--out", str(tmp_path / f"bundle{k}"), "--cache-dir", str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = [(p.wait(timeout=1800), p.stderr.read()) for p in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    assert [code for code, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    for k in range(2):
        assert (tmp_path / f"bundle{k}" / "model.pte").read_bytes() == warm[1]
    (entry,) = LoweringCache(cache).entries()  # one entry, whole: loading it checks its hash
    assert entry.subnet == SPEC.id and LoweringCache(cache).load(entry.key, SPEC.id)[0] == warm[1]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_jobs_must_be_positive_and_fit_in_memory(tmp_path, caplog):
    for jobs in ("0", "-2"):
        proc = run_allinone("build", "--checkpoint", str(TINY_OVERFIT), "--profile", "host-x86_64", "--out",
                            str(tmp_path / "dist"), "--jobs", jobs, check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.strip().splitlines()[-1] == (f"allinone: error: --jobs {jobs}: expected a number of "
                                                        f"lowering processes >= 1")
        assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1
    with caplog.at_level(logging.WARNING):
        assert worker_count(8, 5, 2 * 2**30, available_bytes=5 * 2**30) == 2  # 80 % of 5 GiB holds two
    assert caplog.messages == ["--jobs 8: memory allows 2 lowering processes (5.0 GiB available, about 2.0 GiB "
                               "each); using 2"]
    assert worker_count(None, 3, 2**30, available_bytes=2**40) <= 3
    assert worker_count(None, 3, 2**40, available_bytes=2**30) == 1  # never none


def test_cache_list_and_clear(warm, tmp_path):
    cache = _copy(warm[0], tmp_path).directory
    (cache / "not-ours.txt").write_text("a file the cache did not make")
    (cache / ".staging-abc-123").mkdir()  # what an interrupted write leaves
    listed = run_allinone("cache", "list", "--cache-dir", str(cache)).stdout.splitlines()
    assert SPEC.id in listed[0] and "weights" in listed[0] and listed[-1].startswith("1 entry, ")
    assert listed[-1].endswith(f" MiB in {cache}")
    as_json = json.loads(run_allinone("cache", "list", "--cache-dir", str(cache), "--json").stdout)
    (entry,) = as_json["entries"]
    assert entry["subnet"] == SPEC.id and entry["bytes"] > len(warm[1]) and as_json["directory"] == str(cache)
    cleared = run_allinone("cache", "clear", "--cache-dir", str(cache)).stdout.strip()
    assert cleared.startswith("removed 1 entry, ") and cleared.endswith(f"MiB freed from {cache}")
    assert sorted(p.name for p in cache.iterdir()) == ["not-ours.txt"]
    assert run_allinone("cache", "list", "--cache-dir", str(cache)).stdout.startswith("0 entries, 0.00 MiB")


def test_build_lowers_in_workers_then_reads_every_program_back(tmp_path):
    """Two profiles selecting two systems: lowered in two processes, each logged when it starts and ends;
    the second build lowers nothing and writes byte-identical programs."""
    ckpt = clip_catalog_checkpoint(tmp_path, "--no-activations")
    board = tmp_path / "float-only-board.yaml"
    board.write_text(board_profile("float-only-board", "a test board whose runtime has no integer kernels"))
    cache = tmp_path / "cache"

    def build(out: str, *extra: str):
        proc = run_allinone("build", "--checkpoint", str(ckpt), "--profile", "host-x86_64", "--profile", str(board),
                            "--out", str(tmp_path / out), "--cache-dir", str(cache), "--json", *extra)
        return json.loads(proc.stdout)["bundles"], proc.stderr

    cold, log = build("cold", "--jobs", "2")
    subnets = {b["subnet"] for b in cold}
    assert len(subnets) == 2 and [b["lowering"]["cache"] for b in cold] == ["miss", "miss"]
    assert "lowering 2 systems in 2 processes" in log
    # a spawned worker starts with Python's defaults: the CLI's quieting of library notices must reach it
    assert "Failed to load" not in log and "Warning" not in log and "register_constant" not in log, log
    for subnet in subnets:
        assert f"lowering {subnet} ..." in log and f"lowered {subnet} in " in log
    warm, log = build("warm")
    assert [b["lowering"]["cache"] for b in warm] == ["hit", "hit"] and "lowering d" not in log.replace("lowering cache", "")
    assert all(f"lowering cache hit {s} (" in log for s in subnets)
    assert [b["sha256"] for b in warm] == [b["sha256"] for b in cold]
    for b in warm:
        assert Path(b["path"], "model.pte").read_bytes() == Path(tmp_path / "cold" / b["profile"], "model.pte").read_bytes()
