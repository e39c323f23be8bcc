"""`python -m allinone_runtime transcribe|bench|report ...`: the runtime's own CLI, for devices without allinone."""

from __future__ import annotations

import argparse
import logging
import sys

from allinone_runtime.errors import EXIT_INTERNAL, RuntimeInputError

__all__ = ["add_commands", "add_decoder_arguments", "decoder_arguments", "build_parser", "main"]


def add_commands(sub, default_audio: str = "seeded noise") -> dict:
    """Declare transcribe, bench and report on an argparse subparsers object; returns the three parsers by
    name. Shared with the `allinone` CLI, so both front ends take the same arguments; `default_audio` says
    what bench times when no --audio is given (the front end supplies it)."""
    parsers = {}
    p = parsers["transcribe"] = sub.add_parser("transcribe", help="transcribe audio files with a bundle (greedy CTC, "
                                                                  "or beam search with the bundle's LM)")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (model.pte + manifest.json)")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV/FLAC/OGG, any rate; resampled to 16 kHz)")
    p.add_argument("--json", action="store_true", help="print JSON: text, per-word start/end times, timings")
    p.add_argument("--threads", type=int, help="CPU threads (default: ExecuTorch's, the performance cores)")
    add_decoder_arguments(p)

    p = parsers["bench"] = sub.add_parser("bench", help="time a bundle on this machine; write report.json, report.md, latency.png")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    p.add_argument("--out", required=True, metavar="DIR", help="where the report goes")
    p.add_argument("--lengths", default="1,5,10,20", help="audio lengths in seconds, 0.5-30 (default: 1,5,10,20)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per length after one warm-up (default: 10)")
    p.add_argument("--threads", type=int, help="CPU threads (default: ExecuTorch's, the performance cores)")
    p.add_argument("--etdump", action="store_true", help="add the per-operator breakdown (ETDump + Inspector)")
    p.add_argument("--audio", metavar="FILE", help=f"speech clip repeated to each length (default: {default_audio})")
    p.add_argument("--runner", choices=["python", "cpp"], default="python",
                   help="python: this runtime; cpp: build and run the native runner (needs cmake, g++)")

    p = parsers["report"] = sub.add_parser("report", help="merge the report.json files under DIST into one table and plot")
    p.add_argument("dist", metavar="DIST", help="folder holding bundles' bench reports")
    return parsers


def add_decoder_arguments(p: argparse.ArgumentParser) -> None:
    """Decoder overrides of transcribe (the bundle's manifest holds the defaults)."""
    p.add_argument("--greedy", action="store_true", help="decode greedily even if the bundle carries an LM")
    p.add_argument("--hotwords", metavar="FILE", help="phrases to favour, one per line, optional ' :BOOST' "
                   "(e.g. 'ada lovelace :2.0'); needs a bundle with an LM")
    p.add_argument("--beam", type=int, help="hypotheses kept per frame (default: the bundle's)")
    p.add_argument("--lm-weight", type=float, help="LM weight (default: the bundle's)")
    p.add_argument("--word-bonus", type=float, help="score per word (default: the bundle's)")
    p.add_argument("--oov-penalty", type=float, help="score of a word outside the lexicon (default: the bundle's)")


def decoder_arguments(args: argparse.Namespace) -> dict:
    """transcribe_command's decoder keywords from parsed arguments."""
    overrides = {k: getattr(args, k) for k in ("beam", "lm_weight", "word_bonus", "oov_penalty")
                 if getattr(args, k, None) is not None}
    return {"greedy": args.greedy, "decoder_overrides": overrides or None, "hotwords_file": args.hotwords}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m allinone_runtime", description=__doc__.splitlines()[0],
                                     epilog="Exit codes: 0 done; 1 unexpected internal error (one line; rerun with "
                                            "--debug for the traceback); 2 bad input; 130 interrupted.")
    parser.add_argument("--debug", action="store_true", help="on an error, print its full traceback")
    for command in add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND")).values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,  # also after the command
                             help="on an error, print its full traceback")
    return parser


def main(argv: list[str] | None = None) -> int:
    from allinone_runtime.commands import bench_command, report_command, transcribe_command

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # an application
    try:
        if args.command == "transcribe":
            return transcribe_command(args.bundle, args.files, as_json=args.json, threads=args.threads,
                                      **decoder_arguments(args))
        if args.command == "bench":
            return bench_command(args.bundle, args.out, lengths=args.lengths, runs=args.runs, threads=args.threads,
                                 etdump=args.etdump, audio=args.audio, runner=args.runner)
        return report_command(args.dist)
    except KeyboardInterrupt:
        print("allinone_runtime: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - no input may end in a traceback; --debug shows it
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, RuntimeInputError):
            print(f"allinone_runtime: error: {message}", file=sys.stderr)
            return err.exit_code
        print(f"allinone_runtime: error: unexpected {type(err).__name__}: {message} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
