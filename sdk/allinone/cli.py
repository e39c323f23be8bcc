"""The `allinone` command line: arguments are declared in `build_parser`, each command is one call into a module.

Heavy imports (torch, executorch) happen inside the command functions so `allinone --help` is instant.
"""

from __future__ import annotations

import argparse
import sys

from allinone.errors import AllinoneError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allinone", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a model family's search space, target systems and their sizes")
    p.add_argument("--model", default="conformer_small", choices=["conformer_small", "conformer_tiny"],
                   help="factory to describe (default: conformer_small)")
    p.set_defaults(func=_cmd_info)

    # --- data (issue 3) ---
    p = sub.add_parser("data", help="make the synthetic speech corpus; check manifests")
    data = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data.add_parser("synth", help="synthesise an offline English TTS corpus (train/dev/test by unseen voice)")
    p.add_argument("--out", required=True, help="corpus folder (rerun with the same settings to continue it)")
    p.add_argument("--hours", type=float, required=True, help="total hours of audio over all splits")
    p.add_argument("--seed", type=int, default=0, help="picks sentences, voices, rates, pitches (default: 0)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--augment", action="store_true", help="add noise/reverb/gain/speed changes to train audio")
    p.add_argument("--strict", action="store_true", help="fail on the first utterance a TTS engine cannot render")
    p.set_defaults(func=_cmd_data_synth)
    p = data.add_parser("check", help="read a manifest (JSONL, TSV, Kaldi dir, LibriSpeech dir); report problems")
    p.add_argument("manifest", help="a .jsonl/.tsv file, a Kaldi data dir or a LibriSpeech folder")
    p.add_argument("--strict", action="store_true", help="fail on the first bad entry instead of skipping it")
    p.set_defaults(func=_cmd_data_check)

    # --- profiles / select (issue 5) ---
    p = sub.add_parser("profiles", help="list, show and validate device profiles")
    actions = p.add_subparsers(dest="profiles_action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="the shipped device profiles and their budgets")
    q.set_defaults(func=_cmd_profiles_list)
    q = actions.add_parser("show", help="print one profile, validated, as YAML")
    q.add_argument("profile", metavar="NAME_OR_PATH", help="shipped profile name or path to a .yaml file")
    q.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    q.set_defaults(func=_cmd_profiles_show)
    q = actions.add_parser("validate", help="check profile files: one line each; exit 2 if any is invalid")
    q.add_argument("files", nargs="+", metavar="FILE", help="profile .yaml files")
    q.set_defaults(func=_cmd_profiles_validate)

    p = sub.add_parser("select", help="the lowest-WER nested system that fits a device profile")
    p.add_argument("--catalog", required=True, metavar="CATALOG.json", help="catalog of the checkpoint's systems")
    p.add_argument("--profile", required=True, metavar="NAME_OR_PATH",
                   help="shipped profile name (see `allinone profiles list`) or path to a .yaml file")
    p.add_argument("--explain", action="store_true",
                   help="also print every candidate and the first constraint it failed")
    p.add_argument("--json", action="store_true",
                   help="print the selection as JSON (subnet, wer, bytes, latency, every candidate); exit 3 if "
                        "nothing fits")
    p.set_defaults(func=_cmd_select)

    # --- eval / compare (issue 4) ---
    p = sub.add_parser("compare", help="is the WER difference of two systems significant? (MAPSSWE test)")
    p.add_argument("hyp_a", metavar="HYP_A", help="hypotheses file (hyps.jsonl) of system A")
    p.add_argument("hyp_b", metavar="HYP_B", help="hypotheses file of system B, scored on the same manifest")
    p.add_argument("--json", action="store_true",
                   help="print WERs, segments, z, p-value and significance at 0.05 as JSON")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("eval", help="WER and CER of nested systems of a checkpoint on a manifest")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--manifest", required=True, metavar="M", help="manifest to score (JSONL, TSV, Kaldi dir, LibriSpeech dir)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--subnet", action="append", metavar="ID", help="a system to score (repeatable)")
    which.add_argument("--targets", action="store_true", help="the checkpoint's target systems (the default)")
    which.add_argument("--all", action="store_true", help="every system of the search space")
    p.add_argument("--hyps-dir", metavar="DIR", help="where SUBNET.hyps.jsonl go (default CHECKPOINT/eval/MANIFEST)")
    p.add_argument("--json", action="store_true", help="print a JSON list (subnet, wer, cer, params, bytes, ...)")
    p.set_defaults(func=_cmd_eval)

    # --- train (issue 4) ---
    p = sub.add_parser("train", help="train an all-in-one supernet (or one system alone with --only)")
    p.add_argument("--recipe", required=True, help="recipe name (tiny, conformer_small) or path to a YAML file")
    p.add_argument("--train", required=True, metavar="M", help="training manifest (JSONL, TSV, Kaldi dir, LibriSpeech dir)")
    p.add_argument("--dev", required=True, metavar="M", help="development manifest, same formats")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (overrides the recipe)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--only", metavar="SPEC_ID", help="train this one system alone: the individually trained baseline")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    p.set_defaults(func=_cmd_train)

    return parser


def _cmd_eval(args: argparse.Namespace) -> int:
    from allinone.eval_run import evaluate_checkpoint
    from allinone.evaluate import format_results_table, results_to_json

    results = evaluate_checkpoint(args.checkpoint, args.manifest, subnets=args.subnet, all_systems=args.all,
                                  hyps_dir=args.hyps_dir, progress=not args.json)
    print(results_to_json(results) if args.json else format_results_table(results))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from allinone.train.recipe import load_recipe
    from allinone.train.trainer import train

    result = train(load_recipe(args.recipe), args.train, args.dev, args.out, max_steps=args.max_steps,
                   resume=args.resume, only=args.only, init=args.init, progress=not args.no_progress)
    rate = result.audio_seconds / max(result.seconds, 1e-9)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s ({rate:.1f} audio-s/s) -> {result.out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from allinone.info import describe_model

    print(describe_model(args.model))
    return 0


def _cmd_profiles_list(args: argparse.Namespace) -> int:
    from allinone.profiles import list_profiles, load_profile

    rows = [("name", "target", "bits", "model MiB", "peak MiB", "RTF budget", "latency figures")]
    for name in list_profiles():
        p = load_profile(name)
        rows.append((p.name, p.target, "/".join(map(str, p.weight_bits)), f"{p.memory.max_model_mib:g}",
                     f"{p.memory.max_peak_rss_mib:g}", f"{p.latency.max_rtf:g} at {p.latency.reference_audio_s:g} s",
                     f"{p.latency_model.source} ±{p.latency_model.uncertainty_pct:g}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _cmd_profiles_show(args: argparse.Namespace) -> int:
    import json

    import yaml

    from allinone.profiles import load_profile

    data = load_profile(args.profile).to_dict()
    text = json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    print(text.rstrip("\n"))
    return 0


def _cmd_profiles_validate(args: argparse.Namespace) -> int:
    from allinone.errors import EXIT_BAD_INPUT, BadInputError
    from allinone.profiles import validate_profile_file

    failed = 0
    for path in args.files:  # every file is checked, so one run reports all bad files
        try:
            profile = validate_profile_file(path)
        except BadInputError as err:
            print(f"allinone: error: {err}", file=sys.stderr)
            failed += 1
        else:
            print(f"ok: {path} ({profile.name})")
    return EXIT_BAD_INPUT if failed else 0


def _cmd_select(args: argparse.Namespace) -> int:
    from allinone.catalog import load_catalog
    from allinone.profiles import load_profile
    from allinone.select import explain_table, select, selection_to_json

    selection = select(load_catalog(args.catalog), load_profile(args.profile))
    if args.json:
        print(selection_to_json(selection))
        return 0
    c = selection.chosen
    wer = "not measured" if c.entry.wer is None else f"{c.entry.wer:.2%}"
    print(f"{c.entry.subnet}: WER {wer}, {c.model_bytes / 2**20:.1f} MiB, predicted RTF {c.rtf:.3f} "
          f"({c.latency_ms:.0f} ms for {selection.profile.latency.reference_audio_s:g} s) on {selection.profile.name}")
    if args.explain:
        print(explain_table(selection))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from allinone.data.synth import synthesize

    report = synthesize(args.out, args.hours, args.seed, args.jobs, augment=args.augment, strict=args.strict)
    print(report.summary())
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    import logging

    from allinone.data.manifest import read_manifest

    logging.getLogger("allinone.data.manifest").setLevel(logging.ERROR)  # problems are printed below
    result = read_manifest(args.manifest, strict=args.strict)
    for problem in result.problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(result.summary())
    return 0


# --- eval / compare (issue 4) ---
def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from allinone.evaluate import compare_files, format_comparison

    result = compare_files(args.hyp_a, args.hyp_b)
    if args.json:
        print(json.dumps({"hyp_a": args.hyp_a, "hyp_b": args.hyp_b, **result.to_dict()}, indent=2))
    else:
        print(format_comparison(result, args.hyp_a, args.hyp_b))
    return 0


def _configure_logging() -> None:
    """The CLI is an application, so it sets up logging (the library never does)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # torchao warns at import about optional GPU kernels a CPU build lacks; torch's pytree warns about
    # an enum torchao registers. Neither concerns a user of this CLI.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        return args.func(args)
    except AllinoneError as err:
        print(f"allinone: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("allinone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
