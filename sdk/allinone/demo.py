"""`allinone demo`: the whole SDK in one command.

checkpoint -> a bundle per device profile (`allinone.build.build_bundles`) -> the bundle for this machine
transcribes a sample clip and is timed here (`allinone_runtime`) -> one table: the system selected per
profile, its WER, size, compression and latency (measured here for this machine's profile, predicted for
the others, each row labelled) -> "what next": commands to try, each runnable as printed.

The log says what happens, once: the build's stages (select, lower each distinct system, verify each program,
bundle), then `time` for the run here.

The demo owns its output directory: a rerun replaces what the previous run wrote there. So that it never
deletes a user's files, it writes a marker file (`.allinone-demo`) first and refuses an existing, non-empty
directory that lacks one.

Just over 400 lines because the report (table, demo.json, "what next" commands) is assembled from the one run it
describes; the build and the timing it calls live elsewhere.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from allinone.errors import EXIT_NO_FIT, EXIT_OK, EXIT_VERIFICATION_FAILED, BadInputError
from allinone.files import atomic_write_text

__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_OUT", "DEMO_MARKER", "DemoRow", "DemoResult", "Measurement",
           "default_audio", "check_inputs", "claim_out_dir", "remove_stale", "match_host_profile", "pick_host_bundle",
           "measure_here", "demo_rows", "format_table", "what_next", "format_summary", "write_demo_files", "run_demo"]

if TYPE_CHECKING:
    from allinone.build import BuiltBundle
    from allinone.profiles import DeviceProfile

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "checkpoints/conformer_medium"
DEFAULT_OUT = "dist/demo"
DEMO_MARKER = ".allinone-demo"  # present in every directory the demo made; its absence protects user data
DEMO_FORMAT_VERSION = 1
UNPROFILED_AUDIO_S = 10.0  # timed audio length on a machine no profile describes (the profiles' usual reference)
BENCH_RUNS = 5  # timed calls after one warm-up: enough for a stable median on an idle machine
SAMPLE_RATE = 16000  # every program takes 16 kHz audio (the .pte signature in docs/formats.md)
MIB = 2 ** 20


def default_audio() -> Path:
    """The speech clip shipped with the package (`allinone/assets/sample.wav`)."""
    import importlib.resources

    return Path(str(importlib.resources.files("allinone") / "assets" / "sample.wav"))


# ---- inputs and the output directory --------------------------------------------------------------------------


def check_inputs(checkpoint: str | Path, audio: str | Path) -> None:
    """One-line BadInputErrors, before minutes of lowering, for a missing checkpoint or catalog and bad audio."""
    from allinone_runtime.audio import read_audio
    from allinone_runtime.errors import RuntimeInputError

    from allinone.select import checkpoint_catalog

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise BadInputError(f"--checkpoint {checkpoint}: no such directory; expected an all-in-one checkpoint "
                            f"(config.json + model.safetensors + catalog.json), e.g. {DEFAULT_CHECKPOINT} from "
                            f"a full clone of the repository")
    for name in ("config.json", "model.safetensors"):
        if not (checkpoint / name).is_file():
            raise BadInputError(f"--checkpoint {checkpoint}: missing {name}; expected an all-in-one checkpoint "
                                f"directory (config.json + model.safetensors + catalog.json)")
    checkpoint_catalog(checkpoint)  # present, and measured on these weights
    try:
        read_audio(audio, SAMPLE_RATE)
    except RuntimeInputError as err:
        raise BadInputError(f"--audio {err}") from None


def claim_out_dir(out: str | Path) -> bool:
    """Make `out` the demo's: create it (or take an empty one) and write the marker. Returns True when it holds
    a previous demo's output (to be replaced); BadInputError when it exists and is not the demo's."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory; choose another --out")
    previous = (out / DEMO_MARKER).is_file()
    if out.is_dir() and not previous and any(out.iterdir()):
        raise BadInputError(f"--out {out}: exists and was not made by `allinone demo` (no {DEMO_MARKER} inside); "
                            f"the demo replaces its output directory's contents, so choose a new or empty --out")
    atomic_write_text(out / DEMO_MARKER, "made by `allinone demo`, which replaces this directory's contents on rerun\n")
    return previous


def remove_stale(out: Path, keep: set[str]) -> list[str]:
    """Remove what a previous demo run left in `out` that this run did not write (e.g. a profile not built
    this time); `out` carries the demo's marker, so everything in it is the demo's."""
    removed = []
    for entry in sorted(out.iterdir()):
        if entry.name in keep or entry.name == DEMO_MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


# ---- this machine ------------------------------------------------------------------------------------------------


def match_host_profile(profiles: list[DeviceProfile], device: dict) -> DeviceProfile | None:
    """The profile whose device this machine plausibly is, by the rule `allinone calibrate` applies to a report
    (`allinone.calibration.check_report_device`: CPU architecture and OS match the profile's target); None if none
    does. Android reports its OS as Linux, so an arm64 Linux machine also passes for a phone: a linux-* profile
    is preferred unless the kernel says Android; among equals, the first given. `device` is
    `allinone_runtime.device.device_info()`."""
    from allinone.calibration import target_mismatch

    # Only the machine and OS decide here; the thread count is a setting of the run, not of the device.
    matches = [p for p in profiles if target_mismatch(device["machine"], device["system"], p) is None]
    android = "android" in device["system"].lower()
    matches.sort(key=lambda p: (p.target == "android-arm64") != android)  # stable: keeps the given order
    return matches[0] if matches else None


@dataclass
class Measurement:
    """The host bundle run here: its transcript of the clip and its latency at one audio length."""

    bundle: str
    profile: str | None  # the matched profile, None on a machine no profile describes
    transcript: str
    audio_s: float  # length of the timed input (the clip repeated)
    p50_ms: float
    rtf: float
    threads: int
    device: dict
    report: str  # report.json of the runtime's bench
    note: str | None = None  # why the bundle timed is not this machine's profile's (then `profile` is None)


def measure_here(bundle_dir: Path, audio: Path, report_dir: Path, *, audio_s: float, threads: int | None,
                 profile: str | None, note: str | None = None) -> Measurement:
    """Transcribe `audio` with the bundle through the runtime and time `audio_s` seconds of it (the clip
    repeated) with the runtime's bench; the bench's report.json/md go to `report_dir`."""
    from allinone_runtime import write_report
    from allinone_runtime.timing import bench

    # One run: the bench given the clip also transcribes it, with the program it timed.
    report = bench(bundle_dir, lengths_s=(audio_s,), runs=BENCH_RUNS, threads=threads, audio=audio)
    path = write_report(report, report_dir)
    row = report["latency"][0]
    return Measurement(str(bundle_dir), profile, report["transcript"], row["audio_s"], row["p50_ms"], row["rtf"],
                       report["threads"], report["device"], str(path), note)


# ---- the table ---------------------------------------------------------------------------------------------------


@dataclass
class DemoRow:
    """One profile's outcome. Sizes in bytes, WER a fraction; `latency_kind` says where the latency comes from:
    'measured here', 'measured on device' (a report of the profile's device in the catalog) or 'predicted'."""

    profile: str
    device: str
    bundle: str | None = None
    subnet: str | None = None
    weight_bits: int | None = None
    wer: float | None = None
    pte_bytes: int | None = None
    weight_bytes: int | None = None
    compression: float | None = None
    latency_ms: float | None = None
    rtf: float | None = None
    audio_s: float | None = None
    latency_kind: str | None = None
    latency_label: str | None = None  # latency_kind as the table shows it, with the prediction's source
    latency_source: str | None = None  # the latency model or the measurement behind the figure
    predicted_ms: float | None = None  # the profile's prediction, kept beside a measurement for comparison
    status: str = "built"  # "built", "no fit" (no system meets the profile) or "failed" (verification)
    error: str | None = None  # why the profile has no bundle

    def to_dict(self) -> dict:
        return asdict(self)


def _device_name(profile) -> str:
    """'Google Pixel 8 (Tensor G3, ...), flagship Android' -> 'Google Pixel 8'."""
    return profile.description.split(" (")[0].split(",")[0].strip()


def _latency(manifest: dict, measured: Measurement | None) -> dict:
    latency = manifest.get("latency") or {}
    if measured is not None:
        return {"latency_ms": measured.p50_ms, "rtf": measured.rtf, "audio_s": measured.audio_s,
                "latency_kind": "measured here", "latency_label": "measured here",
                "latency_source": f"allinone_runtime bench, {measured.threads} threads, p50 of {BENCH_RUNS} runs"}
    if latency.get("measured"):
        m = latency["measured"]
        return {"latency_ms": m["ms"], "rtf": m["rtf"], "audio_s": m["reference_audio_s"],
                "latency_kind": "measured on device", "latency_label": f"measured on device {m['date'][:10]}",
                "latency_source": f"{m['report']} ({m['date'][:10]})"}
    if latency.get("predicted"):
        p = latency["predicted"]
        model = p.get("model") or {}
        pct = model.get("uncertainty_pct")
        basis = f"{model.get('source', 'unknown')} figures" + (f", ±{pct:g}%" if isinstance(pct, (int, float)) else "")
        return {"latency_ms": p["ms"], "rtf": round(p["rtf"], 6), "audio_s": p["reference_audio_s"],
                "latency_kind": "predicted", "latency_label": f"predicted ({basis})",
                "latency_source": f"the profile's latency model ({basis})"}
    return {"latency_kind": "predicted", "latency_label": "not predicted",
            "latency_source": "the profile has no throughput figure for these weight bits"}


def demo_rows(profiles: list[DeviceProfile], built: list[BuiltBundle], failures: list,
              measured: Measurement | None) -> list[DemoRow]:
    """One row per profile, in the order given: its bundle's facts from the manifest, or why it has none."""
    by_profile = {b.profile: b for b in built}
    failed = {f.profile: f for f in failures}
    rows = []
    for profile in profiles:
        row = DemoRow(profile.name, _device_name(profile))
        if profile.name in failed:
            f = failed[profile.name]
            row.status, row.error = ("no fit" if f.exit_code == EXIT_NO_FIT else "failed"), f.reason
        elif profile.name in by_profile:
            b = by_profile[profile.name]
            m = b.manifest
            here = measured if measured is not None and measured.profile == profile.name else None
            row = DemoRow(profile.name, row.device, str(b.path), b.subnet, m["quantization"]["weight_bits"],
                          m["expected"]["wer"], m["sizes"]["pte_bytes"], m["sizes"]["weight_bytes"],
                          m["sizes"]["compression_ratio"], **_latency(m, here),
                          predicted_ms=((m.get("latency") or {}).get("predicted") or {}).get("ms"))
        rows.append(row)
    return rows


def _cell_latency(row: DemoRow) -> str:
    if row.latency_ms is None:
        return "-"
    return f"{row.latency_ms:.1f} ms / {row.audio_s:g} s (RTF {row.rtf:.3g})"


def format_table(rows: list[DemoRow]) -> str:
    """The report as a Markdown table (also readable as plain text), one row per profile."""
    head = ["profile", "device", "system", "bits", "WER", ".pte MiB", "compression", "latency", "latency is"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.status != "built":
            cells = [r.profile, r.device, r.status, "-", "-", "-", "-", "-", "-"]
        else:
            cells = [r.profile, r.device, r.subnet, str(r.weight_bits),
                     "not measured" if r.wer is None else f"{r.wer:.2%}", f"{r.pte_bytes / MIB:.2f}",
                     f"{r.compression:.2f}x", _cell_latency(r), r.latency_label]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class DemoResult:
    checkpoint: str
    out: str
    audio: str
    rows: list[DemoRow]
    measured: Measurement | None
    float_full: dict  # the compression reference: {"subnet", "weight_bytes"}
    next_steps: list[dict] = field(default_factory=list)  # `what_next`: {"do", "commands"}
    host_profile: str | None = None  # which profile stood for this machine, when one was measured here

    @property
    def exit_code(self) -> int:
        """0 when some profile got a bundle; else the build's code (3 nothing fits, 4 verification failed)."""
        if any(r.status == "built" for r in self.rows):
            return EXIT_OK
        return EXIT_VERIFICATION_FAILED if any(r.status == "failed" for r in self.rows) else EXIT_NO_FIT

    def to_dict(self) -> dict:
        return {"format_version": DEMO_FORMAT_VERSION, "kind": "allinone-demo", "checkpoint": self.checkpoint,
                "out": self.out, "audio": self.audio, "float_full_system": self.float_full,
                "profiles": [r.to_dict() for r in self.rows],
                "measured_here": asdict(self.measured) if self.measured is not None else None,
                "host_profile": self.host_profile, "what_next": self.next_steps}


def format_summary(result: DemoResult) -> str:
    """The table, its footnotes, the transcript and where everything is."""
    full = result.float_full
    lines = [format_table(result.rows), ""]
    if full["weight_bytes"] is not None:
        lines += [
            "WER: the system's WER on the checkpoint's dev set, from catalog.json (the manifest's expected WER).",
            f"compression: weight bytes of the float full system {full['subnet']} ({full['weight_bytes']:,} B) / the "
            f"system's weight bytes, both counted by allinone.size at deployed precision (scales and constants "
            f"included); the .pte adds its container on top.",
            "latency: median for the stated audio length. 'measured here': timed on this machine now; 'predicted': "
            "the profile's latency model (its figures' source and uncertainty in brackets), not a measurement; "
            "'measured on device': a report from that device recorded in the catalog."]
    for r in result.rows:
        if r.status != "built":
            lines.append(f"{r.profile} ({r.status}): {r.error}")
    if result.host_profile:
        lines.append(result.host_profile)
    m = result.measured
    lines.append("")
    if m is None:
        lines.append("No bundle was built, so nothing was transcribed or timed here.")
    else:
        if m.profile is None:
            lines.append(f"{m.note[0].upper()}{m.note[1:]}; {m.bundle} was timed here anyway: {m.p50_ms:.1f} ms for "
                         f"{m.audio_s:g} s of audio (RTF {m.rtf:.3g}, {m.threads} threads) on an unprofiled machine, "
                         f"so no row of the table claims it.")
        lines.append(f"Transcript of {result.audio} by {m.bundle}:")
        lines.append(f"  {m.transcript}")
    lines.append(f"Bundles: {result.out}/<profile>/ (model.pte + manifest.json); this table: {result.out}/demo.md, "
                 f"{result.out}/demo.json")
    if result.next_steps:
        lines += ["", "What next:"]
        for step in result.next_steps:
            lines.append(f"  {step['do']}:")
            lines += [f"    {command}" for command in step["commands"]]
    return "\n".join(lines)


def allinone_command() -> str:
    """How to run this CLI again, for the printed commands: `allinone` when that name on PATH is the program
    running now (or when not run as the console script), else the path it was started by (`.venv/bin/allinone`)."""
    started = sys.argv[0]
    if Path(started).name != "allinone":
        return "allinone"
    on_path = shutil.which("allinone")
    if on_path is not None and Path(on_path).resolve() == Path(started).resolve():
        return "allinone"
    return shlex.quote(started)


def what_next(checkpoint: str, out: str, audio: str, measured: Measurement | None, profile: str | None,
              allinone: str) -> list[dict]:
    """Commands to try after the demo, each of which runs as printed from the directory the demo ran in:
    transcribe with the bundle run here, build for a profile of one's own (a copy of `profile`, a name or
    path), read the latency report. None without a bundle run here."""
    if measured is None:
        return []
    q = shlex.quote
    try:  # the packaged clip, from a checkout: as short as it can be
        audio = str(Path(audio).relative_to(Path.cwd()))
    except ValueError:
        pass
    return [
        {"do": "Transcribe your own audio (WAV/FLAC/OGG, any sample rate) with the bundle run here",
         "commands": [f"{allinone} transcribe {q(measured.bundle)} {q(audio)}"]},
        {"do": "Build for your own device: copy a profile, set its name and budgets (docs/howto-profile.md), build",
         "commands": [f"{allinone} profiles show {q(str(profile))} > my-device.yaml",
                      f"{allinone} build --checkpoint {q(checkpoint)} --profile my-device.yaml "
                      f"--out {q(str(Path(out).parent))}"]},
        {"do": "Read the latency report of the run here (report.json beside it)",
         "commands": [f"cat {q(str(Path(measured.report).with_name('report.md')))}"]},
    ]


def write_demo_files(result: DemoResult) -> tuple[Path, Path]:
    """OUT/demo.md and OUT/demo.json, each written atomically."""
    out = Path(result.out)
    md, js = out / "demo.md", out / "demo.json"
    atomic_write_text(md, "# allinone demo\n\n" + format_summary(result) + "\n")
    atomic_write_text(js, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    return md, js


# ---- the whole run -----------------------------------------------------------------------------------------------


def _float_full(checkpoint: Path, built: list[BuiltBundle]) -> dict:
    """The compression reference recorded in the manifests (the float full system's weight bytes)."""
    from allinone.spec import SearchSpace

    config = json.loads((checkpoint / "config.json").read_text())
    subnet = SearchSpace.from_dict(config["search_space"]).largest().id
    weight_bytes = built[0].manifest["sizes"]["float_full_weight_bytes"] if built else None
    return {"subnet": subnet, "weight_bytes": weight_bytes}


def pick_host_bundle(loaded: list[DeviceProfile], built: list[BuiltBundle],
                     device: dict) -> tuple[BuiltBundle, DeviceProfile | None, str | None]:
    """The bundle to run here: the one built for this machine's profile, else the first built one.
    Returns (bundle, its profile if it is this machine's, a note when it is not)."""
    host = match_host_profile(loaded, device)
    by_profile = {b.profile: b for b in built}
    if host is not None and host.name in by_profile:
        return by_profile[host.name], host, None
    where = f"{device['machine']}, {device['system']}"
    if host is not None:
        note = f"this machine ({where}) is {host.name}'s device, but {host.name} got no bundle"
    else:
        note = f"this machine ({where}) matches no device profile"
    return built[0], None, note


def run_demo(checkpoint: str | Path = DEFAULT_CHECKPOINT, out: str | Path = DEFAULT_OUT, *,
             audio: str | Path | None = None, profiles: list[str] | None = None, threads: int | None = None,
             progress: bool = True, allinone: str | None = None, measure_host: bool = True, cache=None,
             jobs: int | None = None) -> DemoResult:
    """Build every profile's bundle into OUT, transcribe and time the clip with this machine's bundle, and
    write OUT/demo.md, OUT/demo.json and OUT/report/. Returns what the table shows. `allinone` is how the
    "what next" commands call the CLI (default: `allinone_command()`); `cache` and `jobs` go to the build
    (`allinone.build.build_bundles`), `jobs` also to the host profile's lowerings."""
    from allinone.build import build_bundles
    from allinone.lowering import check_jobs
    from allinone.profiles import list_profiles, load_profile
    from allinone_runtime.device import device_info

    checkpoint, out = Path(checkpoint), Path(out)
    audio = Path(audio) if audio is not None else default_audio()
    check_inputs(checkpoint, audio)
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads: expected >= 1, got {threads}")
    check_jobs(jobs)
    names = list(profiles) if profiles else list_profiles()
    loaded = [load_profile(name) for name in names]  # unknown names refused before the directory is touched
    if claim_out_dir(out):
        log.info("%s holds a previous demo's output: replacing it", out)
    given, host_note = list(names), None
    host = match_host_profile(loaded, device_info()) if measure_host else None
    if host is not None:  # this machine's own figures, measured once and cached, replace the static guess
        from allinone.profile_measure import cached_host_profile

        i = loaded.index(host)
        log.info("this machine is %s's device: measuring a profile for it (once; cached)", host.name)
        loaded[i], path, fresh = cached_host_profile(checkpoint, host, threads or host.threads, jobs)
        names[i] = str(path)
        fit = loaded[i].latency_model.fit
        host_note = (f"{host.name}: this machine's row uses a profile measured here ({path}, "
                     f"{'measured now' if fresh else 'measured ' + str(loaded[i].latency_model.date) + ', cached'}; "
                     f"leave-one-out error max {fit.loo_max_error_pct:g}% over {fit.systems} systems) instead of the "
                     f"shipped {host.name}'s figures, measured on another CPU.")
        log.info("%s", host_note)
    built, failures = build_bundles(checkpoint, names, out, force=True, progress=progress, cache=cache, jobs=jobs)

    measured, copy_from = None, None
    if built:
        bundle, host, note = pick_host_bundle(loaded, built, device_info())
        audio_s = host.latency.reference_audio_s if host is not None else UNPROFILED_AUDIO_S
        log.info("time: %s on this machine%s: transcribe the clip, time %g s of audio (%d runs after a warm-up)",
                 bundle.path, f" ({host.name}'s device)" if host is not None else "", audio_s, BENCH_RUNS)
        measured = measure_here(bundle.path, audio, out / "report", audio_s=audio_s,
                                threads=threads if threads is not None or host is None else host.threads,
                                profile=host.name if host is not None else None, note=note)
        copy_from = given[[p.name for p in loaded].index(bundle.profile)]  # as given: a name or a path
    result = DemoResult(str(checkpoint), str(out), str(audio), demo_rows(loaded, built, failures, measured),
                        measured, _float_full(checkpoint, built),
                        what_next(str(checkpoint), str(out), str(audio), measured, copy_from,
                                  allinone if allinone is not None else allinone_command()), host_note)
    write_demo_files(result)
    keep = {b.profile for b in built} | {"demo.md", "demo.json"} | ({"report"} if measured else set())
    stale = remove_stale(out, keep)
    if stale:
        log.info("removed what the previous demo run left in %s: %s", out, ", ".join(stale))
    return result
