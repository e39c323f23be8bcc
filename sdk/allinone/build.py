"""Build verified bundles: checkpoint + nested system -> .pte -> checked against eager -> bundle directory."""

from __future__ import annotations

import importlib.resources
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from allinone.errors import VerificationError
from allinone.export import input_lengths
from allinone.spec import SubnetSpec

__all__ = ["export_bundle", "verify_program", "sample_audio", "Verification"]

log = logging.getLogger(__name__)

# .pte log-probs vs the eager program: float programs agree to float rounding; quantized ones may differ where
# XNNPACK rounds a dynamic activation scale differently (measured <= ~0.02 on the test models).
MAX_ABS_DIFF = {32: 1e-3, 8: 0.25, 4: 0.25}


def sample_audio() -> torch.Tensor:
    """The real speech clip shipped with the package, (1, N) float32 at 16 kHz."""
    from allinone.data.audio import load_audio

    path = importlib.resources.files("allinone") / "assets" / "sample.wav"
    return torch.from_numpy(load_audio(str(path)))[None]


# Frames whose greedy choice may differ between the .pte and eager: only near-ties flip (a flip needs an
# eager margin within twice the measured log-prob difference), and a broken lowering changes far more (a
# program of another depth: most frames). 5 %, not 1 %: on the 100-frame sample clip 1 % allowed a single
# flip, and a faithful 8-bit program (log-probs within 0.075 of eager, limit 0.25) flipped two.
MAX_FLIPPED_FRAMES = 0.05  # share of frames


@dataclass
class Verification:
    max_abs_diff: float
    transcript: str  # greedy transcript of the .pte
    audio: str
    frames: int = 0
    flipped_frames: int = 0  # frames where the .pte's greedy token differs from eager's (near-ties)
    eager_transcript: str | None = None  # set only when it differs from `transcript`

    def to_dict(self) -> dict:
        out = {"audio": self.audio, "max_abs_diff": self.max_abs_diff, "transcript": self.transcript,
               "frames": self.frames, "flipped_frames": self.flipped_frames}
        if self.eager_transcript is not None:
            out["eager_transcript"] = self.eager_transcript
        return out


def verify_program(pte: bytes, eager: torch.nn.Module, tokenizer, weight_bits: int,
                   audio: torch.Tensor | None = None, audio_name: str = "sample.wav", *,
                   lengths=None) -> Verification:
    """Run the .pte in the ExecuTorch runtime on real speech; its log-probs must match the eager program's
    within tolerance and its greedy choice must agree on at least 95 % of frames, else VerificationError.

    Quantized kernels sum in a different order than PyTorch's (and PyTorch's order depends on its thread
    count), so a frame where two tokens nearly tie can flip and change one character of the transcript; both
    transcripts are then recorded.

    Given the program's `lengths` (`allinone.export.InputLengths`), the .pte gets the audio as the runtime
    feeds it (cut to a length the program takes) and the eager model the whole clip: their outputs must still
    have the same frames, which checks that the cut samples were ones the network never reads."""
    from allinone_runtime.engine import Engine

    waveform = sample_audio() if audio is None else audio
    engine = Engine(pte)  # the runtime's one loading path, as the device runs it
    fed = waveform[0].numpy() if lengths is None else waveform[0, :lengths.fit(waveform.shape[1])].numpy()
    got = torch.from_numpy(engine.run(fed).copy())[None]  # (1, T, V); copied out of its memory
    with torch.no_grad():
        expected = eager(waveform)
    if got.shape != expected.shape:
        raise VerificationError(f"verification on {audio_name}: .pte output shape {tuple(got.shape)} differs from "
                                f"eager {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    if not math.isfinite(diff):  # `diff > limit` is False for NaN: a NaN program would otherwise pass
        sides = [name for name, out in ((".pte", got), ("eager model", expected)) if not torch.isfinite(out).all()]
        raise VerificationError(f"verification on {audio_name}: non-finite log-probs (NaN or inf) from the "
                                f"{' and the '.join(sides)}; expected finite scores (are the checkpoint's weights "
                                f"finite?)")
    best_pte, best_eager = got[0].argmax(-1), expected[0].argmax(-1)  # (T,)
    flipped = int((best_pte != best_eager).sum())
    text_pte, text_eager = tokenizer.decode_ctc(best_pte.tolist()), tokenizer.decode_ctc(best_eager.tolist())
    if diff > MAX_ABS_DIFF[weight_bits] or flipped > MAX_FLIPPED_FRAMES * len(best_pte):
        raise VerificationError(f"verification on {audio_name}: .pte log-probs differ from eager by {diff:.3g} "
                                f"(limit {MAX_ABS_DIFF[weight_bits]}), greedy tokens differ on {flipped} of "
                                f"{len(best_pte)} frames (limit {MAX_FLIPPED_FRAMES:.0%}), transcripts "
                                f"{text_pte!r} vs {text_eager!r}")
    if text_pte != text_eager:
        log.warning("verification on %s: %d near-tie frame(s) flipped (log-probs within %.3g): .pte %r, eager %r",
                    audio_name, flipped, diff, text_pte, text_eager)
    return Verification(diff, text_pte, audio_name, len(best_pte), flipped,
                        text_eager if text_eager != text_pte else None)


def _write(ckpt, program, check: Verification, sizes, out: Path, *, selection=None,
           dev_manifest: str | None = None, force: bool = False):
    """The one bundle step of `export` and `build`: the manifest of a verified program, written. A build's
    `selection` supplies the profile, the expected WER (on `dev_manifest`) and the latency block."""
    from allinone.package import bundle_manifest, write_bundle

    manifest = bundle_manifest(
        ckpt.model, program, sizes, family=ckpt.family, vocabulary=ckpt.config["vocabulary"],
        checkpoint={"path": str(ckpt.path), "weights_sha256": ckpt.config["weights_sha256"]},
        verification=check.to_dict(),
        profile=selection.profile if selection is not None else None,
        expected=None if selection is None else {"wer": selection.chosen.entry.wer, "cer": None,
                                                 "manifest": dev_manifest},
        latency=selection.bundle_latency() if selection is not None else None)
    return write_bundle(out, program.pte, manifest, force=force)


def export_bundle(checkpoint, spec: SubnetSpec | str, out: str | Path, *, force: bool = False,
                  audio: torch.Tensor | None = None, cache=None) -> Path:
    """`allinone export`: lower `spec` of `checkpoint` (a path or a loaded Checkpoint), verify the .pte on
    real speech and write the bundle directory `out`, with no profile. Sizes are counted here (no catalog
    needed); a build takes them from the catalog instead. `cache`: the `LoweringCache` (default: the user's)."""
    from allinone.checkpoint import Checkpoint, load_checkpoint
    from allinone.errors import BadInputError
    from allinone.lowering import lower_cached
    from allinone.lowering_cache import LoweringCache
    from allinone.package import BundleSizes
    from allinone.size import subnet_size, subnet_weight_bytes

    if Path(out).exists() and not force:  # before minutes of lowering, not after
        raise BadInputError(f"{out}: already exists (pass --force to replace it)")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    spec = SubnetSpec.from_id(spec) if isinstance(spec, str) else spec
    ckpt.model.search_space.validate(spec)
    program = lower_cached(ckpt.model, spec, cache if cache is not None else LoweringCache.default()).program
    check = verify_program(program.pte, program.module, ckpt.tokenizer(), spec.weight_bits, audio,
                           lengths=input_lengths(ckpt.model))
    size = subnet_size(ckpt.model, spec)
    sizes = BundleSizes(size.params, size.weight_bytes, size.macs_per_second,
                        subnet_weight_bytes(ckpt.model, ckpt.model.search_space.largest()))
    return _write(ckpt, program, check, sizes, Path(out), force=force).path


@dataclass
class BuiltBundle:
    profile: str
    path: Path
    subnet: str
    pte_bytes: int
    weight_bytes: int
    sha256: str
    wer: float | None
    reused_lowering: bool  # another profile selected the same system, so its lowering was reused
    manifest: dict = field(default_factory=dict, repr=False)  # the manifest written (callers need not reread it)
    lowering: dict = field(default_factory=dict)  # {cache: hit|miss|off, seconds}: how this build got the program

    def to_dict(self) -> dict:
        return {"profile": self.profile, "path": str(self.path), "subnet": self.subnet, "pte_bytes": self.pte_bytes,
                "weight_bytes": self.weight_bytes, "sha256": self.sha256, "wer": self.wer,
                "reused_lowering": self.reused_lowering, "lowering": self.lowering}


@dataclass
class BuildFailure:
    profile: str
    reason: str
    exit_code: int

    def to_dict(self) -> dict:
        return {"profile": self.profile, "error": self.reason, "exit_code": self.exit_code}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _profile_names(profiles: list) -> str:
    """'a, b, c' for a few profiles, '8 profiles' for many: a log line stays one line."""
    return ", ".join(p.name for p in profiles) if len(profiles) <= 3 else _count(len(profiles), "profile")


def build_bundles(checkpoint: str | Path, profiles: list[str], out: str | Path, *, force: bool = False,
                  audio: torch.Tensor | None = None, progress: bool = True, decoder=None, cache=None,
                  jobs: int | None = None) -> tuple[list[BuiltBundle], list[BuildFailure]]:
    """select -> lower -> verify -> bundle, each stage over all profiles before the next, logged once per stage.

    `decoder` (`allinone.memory.DecoderCost`, for `build --lm`): the LM's bytes and the beam-search decoder's
    memory count in every profile's budgets when selecting; the caller then puts the LM in each bundle.

    Profiles that select the same system share one lowering and one verification (the program is the same
    bytes), recorded in each of their bundles. A profile that nothing fits, or whose program fails
    verification, is reported in the failures and gets no bundle; the others are still built. The progress
    bar counts systems lowered, not profiles, and shows no ETA: lowerings differ in length by minutes.

    Programs come from `cache` (an `allinone.lowering_cache.LoweringCache`; default: the user's) when it holds
    them; the rest are lowered in up to `jobs` processes (`allinone.lowering.worker_count`)."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from allinone.checkpoint import load_checkpoint
    from allinone.errors import AllinoneError, BadInputError
    from allinone.lowering import check_jobs, lower_systems
    from allinone.lowering_cache import LoweringCache
    from allinone.package import BundleSizes
    from allinone.profiles import load_profile
    from allinone.select import checkpoint_catalog, select
    from allinone.size import subnet_weight_bytes

    check_jobs(jobs)
    out = Path(out)
    cache = cache if cache is not None else LoweringCache.default()
    ckpt = load_checkpoint(checkpoint)
    catalog = checkpoint_catalog(checkpoint)
    loaded = [load_profile(p) for p in profiles]  # every profile checked before any lowering
    for profile in loaded:
        if (out / profile.name).exists() and not force:
            raise BadInputError(f"{out / profile.name}: already exists (pass --force to replace it)")

    failures: dict[str, BuildFailure] = {}

    def fail(profile, err: AllinoneError) -> None:
        if isinstance(err, BadInputError):
            raise err
        failures[profile.name] = BuildFailure(profile.name, str(err), err.exit_code)
        log.error("%s: %s", profile.name, err)

    # select: each profile's system; profiles sharing a system are built from one program
    chosen, systems = {}, {}  # profile name -> its Selection; spec -> its profiles, in the order given
    for profile in loaded:
        try:
            chosen[profile.name] = select(catalog, profile, decoder)
            spec = ckpt.model.search_space.validate(SubnetSpec.from_id(chosen[profile.name].chosen.entry.subnet))
        except AllinoneError as err:
            fail(profile, err)
            continue
        systems.setdefault(spec, []).append(profile)
    if systems:
        log.info("select: %s -> %s to lower: %s", _count(len(chosen), "profile"), _count(len(systems), "system"),
                 "; ".join(f"{spec.id} ({_profile_names(shared)})" for spec, shared in systems.items()))

    # lower: one program per distinct system, read back from the lowering cache or lowered (several at once)
    bar = tqdm(total=len(systems), desc="lower", unit="system", disable=not progress or not systems,
               dynamic_ncols=True, bar_format="{desc}: {n}/{total} systems [{elapsed}]{postfix}")

    def done(spec: SubnetSpec) -> None:
        bar.set_postfix_str(f"{spec.id}: done", refresh=False)
        bar.update()

    with bar, logging_redirect_tqdm():
        got, errors = lower_systems(ckpt.model, list(systems), cache, checkpoint=checkpoint, jobs=jobs,
                                    on_step=lambda spec, step: bar.set_postfix_str(f"{spec.id}: {step}"),
                                    on_done=done)
    for spec, err in errors.items():
        for profile in systems[spec]:
            fail(profile, err)
    lowered = {spec: got[spec].program for spec in systems if spec in got}  # in the order selected

    # verify: each program once, on speech
    tokenizer, lengths = ckpt.tokenizer(), input_lengths(ckpt.model)  # the same for every system
    verified = {}
    for spec, program in lowered.items():
        try:
            check = verify_program(program.pte, program.module, tokenizer, spec.weight_bits, audio, lengths=lengths)
        except AllinoneError as err:
            for profile in systems[spec]:
                fail(profile, err)
            continue
        verified[spec] = check
        log.info("verify: %s on %s: log-probs within %.3g of eager, %d/%d frames differ, transcript %r",
                 spec.id, check.audio, check.max_abs_diff, check.flipped_frames, check.frames, check.transcript)

    # bundle: one directory per profile, sharing its system's program and verification; sizes are the
    # catalog entry's (counted when the catalog was made), not counted again
    built = []
    full_bytes = subnet_weight_bytes(ckpt.model, ckpt.model.search_space.largest()) if verified else 0
    for spec, check in verified.items():
        program = lowered[spec]
        for k, profile in enumerate(systems[spec]):
            selection = chosen[profile.name]
            entry = selection.chosen.entry
            sizes = BundleSizes(entry.params, entry.weight_bytes, int(entry.macs_per_second), full_bytes)
            written = _write(ckpt, program, check, sizes, out / profile.name, selection=selection,
                             dev_manifest=catalog.meta.get("manifest"), force=force)
            built.append(BuiltBundle(profile.name, written.path, spec.id, len(program.pte), entry.weight_bytes,
                                     written.pte_sha256, entry.wer, reused_lowering=k > 0, manifest=written.manifest,
                                     lowering=got[spec].to_dict()))
        log.info("bundle: %s -> %s/{%s}", spec.id, out, ",".join(p.name for p in systems[spec]))
    order = {profile.name: i for i, profile in enumerate(loaded)}
    return (sorted(built, key=lambda b: order[b.profile]),
            sorted(failures.values(), key=lambda f: order[f.profile]))
