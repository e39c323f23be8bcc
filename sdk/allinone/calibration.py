"""Calibration from latency reports measured on a device: the report fields calibration uses (read by the
runtime's one report reader), the check that a report comes from a profile's device (target, CPU features,
threads), and the refit."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from allinone.errors import BadInputError
from allinone.isa import isa_difference
from allinone.latency_fit import LatencyFit, LatencyPoint, fit_latency_model, fitted_latency_model
from allinone.profiles import FORMAT_VERSION, PRECISION_OF_BITS, DeviceProfile, MeasuredDevice, profile_from_dict

log = logging.getLogger(__name__)

__all__ = ["LatencyReport", "read_report", "report_points", "target_mismatch", "isa_mismatch", "check_report_device",
           "Calibration", "calibrate_profile", "save_profile"]

@dataclass(frozen=True)
class LatencyReport:
    """The fields of a runtime latency report (docs/formats.md, report.json) that calibration uses."""

    path: str
    date: str
    machine: str
    system: str
    cpu: str
    runner: str
    subnet: str
    weight_bits: int
    macs_per_second: float
    pte_bytes: int
    profile: str | None  # the profile the bundle was built for (None: `allinone export`, no profile)
    threads: int
    latency: tuple[tuple[float, float], ...]  # (audio_s, p50_ms) per measured length
    peak_rss_bytes: int
    cores: int = 1
    isa: tuple[str, ...] | None = None  # None: a format-1 report, which recorded no CPU features

    def measured_device(self) -> MeasuredDevice:
        return MeasuredDevice(cpu=self.cpu, machine=self.machine, system=self.system, cores=self.cores)


def read_report(path: str | Path) -> LatencyReport:
    """A runtime latency report, read and validated by the runtime's one report reader
    (`allinone_runtime.schema.read_report`), as the fields calibration uses; BadInputError with one line
    naming the file and key. A format-1 report (no device.isa) is read with a warning: it cannot be matched
    to a profile on CPU features."""
    from allinone_runtime.errors import RuntimeInputError
    from allinone_runtime.schema import read_report as read_report_json

    try:
        data = read_report_json(path)
    except RuntimeInputError as err:
        raise BadInputError(str(err)) from None
    where, device, bundle = str(path), data["device"], data["bundle"]
    if device.get("emulator"):  # an emulator's speed is the host's, not the device's
        raise BadInputError(f"{where}: device.emulator: measured under emulation ({device['emulator']}); expected "
                            f"a report measured on the device itself (emulated timings are no latency source)")
    if bundle["macs_per_second"] is None or bundle["macs_per_second"] <= 0:  # the format allows null; a fit cannot
        raise BadInputError(f"{where}: bundle.macs_per_second: expected a positive number (calibration needs the "
                            f"system's MACs), got {bundle['macs_per_second']!r}")
    return LatencyReport(
        path=where, date=data["date"], machine=device["machine"], system=device["system"], cpu=device["cpu"],
        runner=data["runner"], subnet=bundle["subnet"], weight_bits=bundle["weight_bits"],
        macs_per_second=float(bundle["macs_per_second"]), pte_bytes=bundle["pte_bytes"], profile=bundle["profile"],
        threads=data["threads"], latency=tuple((float(r["audio_s"]), float(r["p50_ms"])) for r in data["latency"]),
        peak_rss_bytes=data["peak_rss_bytes"], cores=device["cores"],
        isa=tuple(device["isa"]) if "isa" in device else None)


def report_points(report: LatencyReport) -> list[LatencyPoint]:
    from allinone.spec import SubnetSpec

    blocks = SubnetSpec.from_id(report.subnet).depth  # a profile's per-block term needs the system's depth
    return [LatencyPoint(report.subnet, report.weight_bits, report.macs_per_second, audio_s, ms, blocks)
            for audio_s, ms in report.latency]


# uname -m of each target; iOS reports the device model ("iPhone15,4") or arm64.
_MACHINES = {"linux-x86_64": ("x86_64", "amd64"), "linux-arm64": ("aarch64", "arm64"),
             "android-arm64": ("aarch64", "arm64"), "ios-arm64": ("arm64", "iphone", "ipad")}
_SYSTEMS = {"linux-x86_64": ("linux",), "linux-arm64": ("linux",), "android-arm64": ("linux", "android"),
            "ios-arm64": ("darwin", "ios", "iphone")}


def target_mismatch(machine: str, system: str, profile: DeviceProfile) -> str | None:
    """Why a device (`uname -m`, OS name) cannot be the profile's, or None when its CPU architecture and OS
    match the profile's target."""
    machines, systems = _MACHINES[profile.target], _SYSTEMS[profile.target]
    if not machine.lower().startswith(machines):
        return (f"device.machine {machine!r} does not match profile {profile.name} "
                f"(target {profile.target} runs on {' or '.join(machines[:2])})")
    if not system.lower().startswith(systems):
        return f"device.system {system!r} does not match profile {profile.name} (target {profile.target})"
    return None


def isa_mismatch(isa: tuple[str, ...] | list[str] | None, profile: DeviceProfile) -> str | None:
    """Why a CPU with features `isa` cannot be the profile's device, or None when they agree or either side
    recorded none (a format-1 report or profile)."""
    if isa is None or profile.isa is None:
        return None
    difference = isa_difference(profile.isa, isa)
    if difference is None:
        return None
    return (f"device.isa differs from profile {profile.name}'s isa: the report's CPU {difference} "
            f"(profile: {', '.join(profile.isa) or 'none'}; report: {', '.join(isa) or 'none'}), and these features "
            f"decide which int8 and int4 kernels run")


def check_report_device(report: LatencyReport, profile: DeviceProfile) -> None:
    """BadInputError unless the report plausibly comes from the profile's device: its CPU architecture and OS
    match the profile's target, its CPU features match the profile's `isa` and it ran with the profile's
    thread count (the throughputs are per count). A side without CPU features (format 1) is let through on
    the rest, with a warning."""
    mismatch = target_mismatch(report.machine, report.system, profile)
    if mismatch is not None:
        raise BadInputError(f"{report.path}: {mismatch}; pass --force if the report really comes from this device")
    mismatch = isa_mismatch(report.isa, profile)
    if mismatch is not None:
        raise BadInputError(f"{report.path}: {mismatch}; measure on a device with the profile's features, or pass "
                            f"--force if the report really comes from this device")
    if report.isa is None:
        log.warning("%s: a format-1 report records no CPU features (device.isa), so it cannot be matched to "
                    "profile %s on ISA; checked on target and threads only", report.path, profile.name)
    elif profile.isa is None:
        log.warning("profile %s names no CPU features (isa), so %s cannot be matched to it on ISA; checked on "
                    "target and threads only", profile.name, report.path)
    if report.threads != profile.threads:
        raise BadInputError(f"{report.path}: threads {report.threads} differs from profile {profile.name}'s threads "
                            f"{profile.threads} (its throughputs are for that count); rerun with "
                            f"--threads {profile.threads} or pass --force")


@dataclass(frozen=True)
class Calibration:
    profile: DeviceProfile
    fit: LatencyFit
    notes: tuple[str, ...]


def calibrate_profile(profile: DeviceProfile, reports: Sequence[LatencyReport], *, force: bool = False,
                      today: datetime.date | None = None) -> Calibration:
    """Refit `profile`'s latency model from reports measured on its device; source becomes `calibrated`.

    Every report's device must match the profile (`check_report_device`) unless `force`."""
    if not reports:
        raise BadInputError("calibrate: no reports; expected at least one report.json")
    if not force:
        for report in reports:
            check_report_device(report, profile)
        _check_same_isa(reports)
    points = [p for report in reports for p in report_points(report)]
    # Too few systems to refit the per-block cost or the size term: the profile's are kept (none when absent).
    size = profile.latency_model.size_term_ms
    fit = fit_latency_model(points, prior_overhead_ms=profile.latency_model.overhead_ms,
                            fixed_block_ms_per_s=profile.latency_model.block_ms_per_s or 0.0,
                            fixed_size_term_ms={b: size.get(b) for b in PRECISION_OF_BITS} if size else None)
    date = (today or datetime.date.today()).isoformat()
    citations = [f"calibrated by allinone calibrate on {date} from {r.path}: {r.subnet} ({r.runner} runner, "
                 f"{r.threads} threads) on {r.cpu or r.machine}, measured {r.date[:10]}; p50 at "
                 + ", ".join(f"{a:g} s = {ms:.1f} ms" for a, ms in r.latency) for r in reports]
    devices = {r.measured_device() for r in reports}
    model, notes = fitted_latency_model(fit, profile.latency_model, source="calibrated", date=date,
                                        citations=citations, device=devices.pop() if len(devices) == 1 else None)
    old = profile.latency_model
    notes = [f"refitted from {len(points)} measured call(s) in {len(reports)} report(s); largest fit error "
             f"{fit.max_abs_error:.1%}; before: overhead_ms {old.overhead_ms:g}, effective GMAC/s "
             + ", ".join(f"{PRECISION_OF_BITS[b]} {old.effective_gmacs(b):.1f}" for b in profile.weight_bits
                         if getattr(old.throughput_gmacs, PRECISION_OF_BITS[b]) is not None)] + notes
    if force:
        notes.append("device checks skipped (--force)")
    # A recalibration replaces the previous calibration's line rather than piling up stale ones.
    kept = [line for line in profile.notes.splitlines() if not line.startswith("Calibration: ")]
    # The figures now assume the reports' CPU features (they differ from the profile's only under --force).
    isas = {r.isa for r in reports}
    isa = isas.pop() if len(isas) == 1 and None not in isas else profile.isa
    calibrated = dataclasses.replace(profile, format_version=FORMAT_VERSION, latency_model=model, isa=isa,
                                     notes="\n".join(kept + ["Calibration: " + "; ".join(notes)]))
    # Round-trip through the validator: a calibrated profile must load like any other.
    return Calibration(profile_from_dict(calibrated.to_dict(), "calibrated profile"), fit, tuple(notes))


def _check_same_isa(reports: Sequence[LatencyReport]) -> None:
    """Reports from CPUs with different features measure different kernels: never one fit."""
    known = [r for r in reports if r.isa is not None]
    for other in known[1:]:
        difference = isa_difference(known[0].isa, other.isa)
        if difference is not None:
            raise BadInputError(f"{other.path}: device.isa differs from {known[0].path}'s: its CPU {difference}; "
                                f"expected reports from one device (one set of CPU features) per calibration")


def save_profile(profile: DeviceProfile, path: str | Path, *, header: str = "") -> Path:
    """Write `profile` as YAML atomically (temp file in the same folder, then renamed)."""
    import yaml

    from allinone.files import atomic_write_text

    path = Path(path)
    lines = [f"# {line}" for line in header.splitlines()]
    lines.append("# Units are in key names: _mib = MiB (2**20 bytes), _ms = milliseconds, _s = seconds, "
                 "_gmacs = GMAC/s.")
    body = yaml.safe_dump(profile.to_dict(), sort_keys=False, allow_unicode=True, width=110)
    atomic_write_text(path, "\n".join(lines) + "\n" + body)
    return path
