"""The `allinone` command line: arguments are declared in `build_parser`, each command is one call into a module.

Heavy imports (torch, executorch) happen inside the command functions so `allinone --help` is instant.
Longer than 400 lines because every command's arguments and help are declared here, in one place; each command
function is a few lines that call into a module.
"""

from __future__ import annotations

import argparse
import json
import sys

from allinone.errors import EXIT_INTERNAL, AllinoneError
from allinone.models.registry import MODEL_NAMES, family_of
from allinone_runtime.errors import RuntimeInputError

__all__ = ["build_parser", "main"]

EXIT_CODES = ("Exit codes (every command): 0 done; 1 unexpected internal error (one line; rerun with --debug for "
              "the traceback); 2 bad input (a file, value or name; the line names it and what was expected); "
              "3 no nested system fits a device profile (select, build, demo); 4 a built program or a packed "
              "checkpoint failed verification (export, build, demo, pack); 130 interrupted.")


# `allinone info` describes the conformer factories of the model registry (allinone.models.registry)
_CONFORMERS = [name for name in MODEL_NAMES if family_of(name) == "conformer"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allinone", description=__doc__.splitlines()[0], epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a model family's search space, target systems and their sizes")
    p.add_argument("--model", default="conformer_small", choices=_CONFORMERS,
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
    p.add_argument("--eval-hours", type=float, default=None,
                   help="hours of dev and of test each (default: 10 %% of --hours each)")
    p.add_argument("--corpus-version", type=int, choices=(1, 2), default=2,
                   help="2: all voices (incl. Piper) and texts (default); 1: the earlier, smaller corpus, exactly")
    p.set_defaults(func=_cmd_data_synth)
    p = data.add_parser("text", help="write every sentence a synthetic corpus assigned to one split (LM text)")
    p.add_argument("--corpus", required=True, help="corpus folder made by `allinone data synth`")
    p.add_argument("--split", default="train", choices=("train", "dev", "test"),
                   help="whose sentences, spoken or not (default: train, the text an LM may learn from)")
    p.add_argument("--out", required=True, help="text file to write, one sentence per line")
    p.set_defaults(func=_cmd_data_text)
    p = data.add_parser("check", help="read a manifest (JSONL, TSV, Kaldi dir, LibriSpeech dir); report problems")
    p.add_argument("manifest", help="a .jsonl/.tsv file, a Kaldi data dir or a LibriSpeech folder")
    p.add_argument("--strict", action="store_true", help="fail (exit 2) on the first bad entry instead of skipping "
                   "it, and on a manifest without utterances; implies --deep")
    p.add_argument("--deep", action=argparse.BooleanOptionalAction, default=None,
                   help="decode every sample, not only headers: NaN/infinite or truncated audio is a bad entry; "
                        "beyond full scale, clipped and silent audio are warnings (default: on with --strict)")
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
    q = actions.add_parser("measure", help="measure a profile for this machine: lower a small design of the "
                           "checkpoint's systems, time them here, fit the latency model, write a valid profile")
    q.add_argument("--checkpoint", required=True, metavar="DIR", help="all-in-one checkpoint whose systems to time")
    q.add_argument("--out", required=True, metavar="FILE.yaml", help="profile to write (atomically)")
    q.add_argument("--threads", type=int, metavar="N", help="threads to time with (default: every CPU this "
                   "process may use); the profile's throughputs are for this count")
    q.add_argument("--runs", type=int, default=10, metavar="N", help="timed calls per system (default: %(default)s); "
                   "timings are cached, so a rerun times only what is missing")
    q.add_argument("--base", metavar="NAME_OR_PATH", help="profile whose budgets and reference length to keep "
                   "(default: the shipped profile of this machine's target, e.g. host-x86_64)")
    q.add_argument("--name", help="profile name (default: the --out file name without .yaml)")
    q.add_argument("--jobs", type=int, default=None, metavar="N", help="systems lowered at once, each in its own "
                   "process (default: one per core, as memory allows); timing runs after, alone")
    q.set_defaults(func=_cmd_profiles_measure)

    p = sub.add_parser("select", help="the lowest-WER nested system that fits a device profile")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory; reads DIR/catalog.json "
                        "(made by `allinone catalog`)")
    source.add_argument("--catalog", metavar="CATALOG.json", help="a catalog file of a checkpoint's systems")
    p.add_argument("--profile", required=True, metavar="NAME_OR_PATH",
                   help="shipped profile name (see `allinone profiles list`) or path to a .yaml file")
    p.add_argument("--explain", action="store_true",
                   help="also print every candidate and the first constraint it failed")
    p.add_argument("--json", action="store_true",
                   help="print the selection as JSON (subnet, wer, bytes, latency, every candidate); exit 3 if "
                        "nothing fits")
    p.add_argument("--lm", metavar="LM_DIR", help="select for a bundle that will carry this word LM (`build --lm`): "
                   "its files count with the model's bytes, the beam-search decoder's memory with the peak")
    p.add_argument("--beam", type=int, default=None, help="beam width the decoder's memory is counted for "
                   "(default: allinone_runtime.beam.DecoderOptions, docs/formats.md 'Decoder settings')")
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser("catalog", help="measure every target system of a checkpoint (size, MACs, dev WER, "
                       "activation memory) into CHECKPOINT/catalog.json; reruns reuse what is measured")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--manifest", required=True, metavar="DEV", help="dev set to measure WER on (JSONL, TSV, Kaldi "
                   "dir, LibriSpeech dir)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--targets", action="store_true", help="the checkpoint's target systems (the default)")
    which.add_argument("--all", action="store_true", help="every system of the search space")
    p.add_argument("--no-activations", action="store_true", help="skip lowering the smallest system per precision "
                   "to measure planned activation memory (minutes for conformer_small)")
    p.add_argument("--report", action="append", default=[], metavar="REPORT.json",
                   help="record the latency measured in a runtime report (repeatable); select then calls it "
                        "measured for the profile the bundle was built for")
    p.add_argument("--force", action="store_true", help="record reports without checking their device")
    p.add_argument("--json", action="store_true", help="print the catalog as JSON")
    p.set_defaults(func=_cmd_catalog)

    p = sub.add_parser("calibrate", help="refit a device profile's latency model from latency reports "
                       "measured on that device")
    p.add_argument("--profile", required=True, metavar="NAME_OR_PATH", help="profile to refit")
    p.add_argument("--report", required=True, action="append", metavar="REPORT.json",
                   help="report.json written by `allinone bench` or the native runner on the device (repeatable; "
                        "reports of several systems and precisions fit best)")
    p.add_argument("--out", metavar="FILE", help="calibrated profile to write (default: NAME.calibrated.yaml)")
    p.add_argument("--force", action="store_true", help="accept reports whose device (CPU architecture, OS, "
                   "threads) does not match the profile")
    p.set_defaults(func=_cmd_calibrate)

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
    _add_decoder_options(p, "also score SUBNET+beam: CTC prefix beam search with this LM (an `allinone lm build` "
                            "directory), timed against greedy decoding of the same log-probs")
    p.set_defaults(func=_cmd_eval)

    # --- lm (issue 15) ---
    p = sub.add_parser("lm", help="word n-gram language models for the beam-search decoder")
    lm = p.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")
    p = lm.add_parser("build", help="estimate a word n-gram LM (modified Kneser-Ney, ARPA) from text",
                      description="Writes OUT/lm.arpa and OUT/lm.json (docs/formats.md, Language model). Its "
                                  "unigrams are the decoder's lexicon.")
    p.add_argument("--text", required=True, nargs="+", metavar="FILE",
                   help="sentences, one per line, or JSONL manifests (their 'text'); normalised like transcripts")
    p.add_argument("--order", type=int, default=3, metavar="N", help="n-gram order, 1 to 6 (default: 3)")
    p.add_argument("--max-bytes", type=int, default=None, metavar="B",
                   help="size budget of lm.arpa: a count cutoff prunes n-grams of order >= 2 until it fits "
                        "(default: 16 MiB)")
    p.add_argument("--min-word-count", type=int, default=1, metavar="K",
                   help="words seen fewer than K times count as <unk> and leave the lexicon (default: 1, keep all)")
    p.add_argument("--out", required=True, metavar="LM_DIR", help="directory to write")
    p.set_defaults(func=_cmd_lm_build)
    p = lm.add_parser("attach", help="a copy of a bundle with an LM and decoder defaults (or new defaults)",
                      description="Writes OUT (default: BUNDLE, replaced atomically) = BUNDLE + lm/ + the manifest's "
                                  "decoder block, verified by transcribing a clip greedily and with the LM.")
    p.add_argument("--bundle", required=True, metavar="BUNDLE")
    p.add_argument("--out", metavar="DIR", help="bundle to write (default: replace BUNDLE)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    _add_decoder_options(p, "LM directory (`allinone lm build`)")
    p.set_defaults(func=_cmd_lm_attach)

    p = sub.add_parser("tune-decoder", help="search a bundle's LM weight and word bonus on a dev set; write them "
                                            "as its decoder defaults",
                       description="Runs the bundle's program once per utterance, decodes with every (LM weight, "
                                   "word bonus) pair, and writes OUT (default: BUNDLE, replaced atomically) with the "
                                   "best as the manifest's decoder defaults. Use a dev set, never a test set.")
    p.add_argument("--bundle", required=True, metavar="BUNDLE", help="a bundle that carries an LM")
    p.add_argument("--manifest", required=True, metavar="DEV", help="dev manifest (JSONL, TSV, Kaldi dir, LibriSpeech dir)")
    p.add_argument("--lm-weights", type=_float_list, default=None, metavar="W,W,...",
                   help="LM weights to try (default: 0.5,0.7,0.9,1.1)")
    p.add_argument("--word-bonuses", type=_float_list, default=None, metavar="B,B,...",
                   help="word bonuses to try (default: 1.5,2.5,3.5,4.5)")
    p.add_argument("--out", metavar="DIR", help="bundle to write (default: replace BUNDLE)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_cmd_tune_decoder)

    # --- build (issue 6) ---
    p = sub.add_parser("build", help="build verified ExecuTorch bundles for device profiles from a checkpoint",
                       description="select -> extract -> quantize -> export -> lower -> verify -> bundle. Exit codes: "
                                   "0 built; 2 bad input; 3 no system fits a profile; 4 a program failed verification.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory (with catalog.json)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--profile", action="append", metavar="P", help="profile name or YAML path (repeatable)")
    target.add_argument("--all-profiles", action="store_true", help="every shipped profile")
    p.add_argument("--out", required=True, metavar="DIST", help="bundles go to DIST/<profile>/")
    p.add_argument("--force", action="store_true", help="replace existing bundles")
    p.add_argument("--verify-audio", metavar="FILE", help="speech to verify each .pte on (default: the shipped clip)")
    p.add_argument("--json", action="store_true", help="print each bundle (path, subnet, sizes, sha256, lowering "
                   "seconds and cache hit/miss) as JSON")
    _add_decoder_options(p, "put this LM (an `allinone lm build` directory) in every bundle: transcripts come from "
                            "CTC prefix beam search with it; the options below become the manifest's defaults")
    _add_lowering_options(p, jobs=True)
    _add_verbose(p)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("export", help="lower one known system of a checkpoint to a verified bundle")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--subnet", required=True, metavar="ID", help="e.g. d8-f384-h3-w4")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--verify-audio", metavar="FILE", help="speech to verify the .pte on (default: the shipped clip)")
    _add_decoder_options(p, "put this LM in the bundle (see `build --lm`)")
    _add_lowering_options(p, jobs=False)
    _add_verbose(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("cache", help="show or free the lowering cache (programs kept so an unchanged system is "
                                     "not lowered again)")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("list", help="entries (subnet, size, age) and the total")
    q.add_argument("--cache-dir", metavar="DIR", help="the cache to list (default: the user's cache directory)")
    q.add_argument("--json", action="store_true", help="print the entries as JSON")
    q.set_defaults(func=_cmd_cache_list)
    q = actions.add_parser("clear", help="remove every entry")
    q.add_argument("--cache-dir", metavar="DIR", help="the cache to clear (default: the user's cache directory)")
    q.set_defaults(func=_cmd_cache_clear)

    p = sub.add_parser("runner", help="cross-build the native runner for a device and write it as a self-contained "
                                      "folder (runner, ExecuTorch libraries, runner.json with sha256)")
    p.add_argument("--target", required=True, choices=["linux-arm64"],
                   help="linux-arm64: 64-bit ARM Linux boards (needs g++-aarch64-linux-gnu: scripts/setup-arm64.sh)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=_cmd_runner)

    p = sub.add_parser("inspect", help="print a bundle's manifest summary, sizes and delegated operator counts")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--json", action="store_true", help="print the whole manifest.json")
    p.set_defaults(func=_cmd_inspect)

    # --- demo (issue 9) ---
    from allinone.demo import DEFAULT_CHECKPOINT, DEFAULT_OUT

    p = sub.add_parser("demo", help="the whole SDK in one command: bundles for every profile, a transcript, a report",
                       description="Build a bundle for every device profile from a checkpoint, transcribe a sample "
                                   "clip with the bundle for this machine, time it here, and print one table: system, "
                                   "WER, size, compression and latency per profile (measured here for this machine's "
                                   "profile, predicted for the others). The demo owns --out: a rerun replaces "
                                   "everything in it. It refuses an existing, non-empty --out it did not make "
                                   "(one without a .allinone-demo marker file). Exit codes: 0 done (a profile that "
                                   "nothing fits is a row of the table); 2 bad input; 3 no profile got a bundle "
                                   "(nothing fits any); 4 no profile got a bundle (verification failed).")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="DIR",
                   help=f"checkpoint directory with catalog.json (default: {DEFAULT_CHECKPOINT})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory, owned and replaced by the demo (default: {DEFAULT_OUT})")
    p.add_argument("--audio", metavar="FILE", help="speech to transcribe and time (default: the packaged sample clip "
                   "allinone/assets/sample.wav)")
    p.add_argument("--profile", action="append", metavar="P", help="profile name or YAML path (repeatable; "
                   "default: every shipped profile)")
    p.add_argument("--threads", type=int, metavar="N", help="runtime threads for the run here (default: this "
                   "machine's profile's threads)")
    p.add_argument("--static-host-profile", action="store_true", help="use the shipped figures for this machine's "
                   "profile instead of a profile measured here (by default measured once with `allinone profiles "
                   "measure` and cached)")
    _add_lowering_options(p, jobs=True)
    _add_verbose(p)
    p.set_defaults(func=_cmd_demo)

    # --- runtime (issue 7) ---
    # Declared once in allinone_runtime (its own `python -m allinone_runtime` takes the same arguments).
    from allinone_runtime.__main__ import add_commands

    runtime = add_commands(sub, default_audio="the packaged allinone/assets/sample.wav")  # see _cmd_bench
    runtime["transcribe"].set_defaults(func=_cmd_transcribe)
    runtime["bench"].set_defaults(func=_cmd_bench)
    runtime["report"].set_defaults(func=_cmd_report)

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
    p.add_argument("--skip-nonfinite", type=int, default=0, metavar="N",
                   help="skip up to N batches whose loss or gradient is NaN/inf, with a warning each (default 0: "
                        "stop at the first one, naming its utterances)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("pack", help="a training run -> a checkpoint to ship: weights (float16 by default) + config + "
                       "thinned log, no trainer state; refused if the float full system's dev WER moves")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="training run directory (allinone train --out)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--dtype", default="float16", help="weight storage: float16 (default), bfloat16 or float32")
    p.add_argument("--max-wer-change", type=float, default=0.0, metavar="W",
                   help="accept a --dev WER change of up to W from the storage dtype (absolute, 0.001 = 0.1 "
                        "points; default 0: unchanged)")
    p.add_argument("--dev", metavar="M", help="dev manifest: check the float full system's WER is unchanged "
                   "(or within --max-wer-change)")
    p.add_argument("--log-every", type=int, default=10, help="keep every Nth step of metrics.jsonl (default 10)")
    p.add_argument("--force", action="store_true", help="replace an existing --out (its *.md notes and catalog.json "
                   "are kept, eval/ goes with the old weights; rerun `allinone catalog` before selecting)")
    p.set_defaults(func=_cmd_pack)

    # --- wav2vec2 import (issue 8) ---
    p = sub.add_parser("import-hf", help="convert a local Hugging Face Wav2Vec2ForCTC folder into an all-in-one "
                       "checkpoint (needs no transformers)")
    p.add_argument("directory", metavar="DIR", help="folder with config.json, vocab.json and model.safetensors "
                   "(or pytorch_model.bin, read with weights_only=True)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint directory to write")
    p.add_argument("--depths", type=_int_list, help="elastic depth choices, e.g. 6,9,12 (default: 1/2, 3/4, all)")
    p.add_argument("--ffn-dims", type=_int_list, help="elastic feed-forward widths (default: 1/4 .. 4/4)")
    p.add_argument("--heads", type=_int_list, help="elastic head counts (default: 1/2, 3/4, all)")
    p.add_argument("--weight-bits", type=_int_list, help="precisions, from 32,8,4 (default: all that fit)")
    p.add_argument("--no-reorder", action="store_true", help="keep HF's unit and head order (no importance sort)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out")
    p.set_defaults(func=_cmd_import_hf)

    _add_debug(parser)
    parser.set_defaults(debug=False)
    return parser


def _add_decoder_options(p: argparse.ArgumentParser, lm_help: str) -> None:
    # defaults named in words, not imported: allinone_runtime.beam would load numpy for every `allinone --help`
    defaults = "default: allinone_runtime.beam.DecoderOptions, docs/formats.md 'Decoder settings'"
    p.add_argument("--lm", metavar="LM_DIR", help=lm_help)
    p.add_argument("--beam", type=int, default=None, help=f"hypotheses kept per frame ({defaults})")
    p.add_argument("--lm-weight", type=float, default=None, help=f"LM weight ({defaults})")
    p.add_argument("--word-bonus", type=float, default=None, help=f"score per word ({defaults})")
    p.add_argument("--oov-penalty", type=float, default=None,
                   help=f"score of a word outside the LM's lexicon ({defaults})")


def _decoder_options(args: argparse.Namespace):
    """DecoderOptions from the defaults with any option given on the command line."""
    from dataclasses import replace

    from allinone_runtime.beam import DecoderOptions

    given = {k: getattr(args, k) for k in ("beam", "lm_weight", "word_bonus", "oov_penalty")
             if getattr(args, k, None) is not None}
    return replace(DecoderOptions(), **given).check("decoder options")


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """--debug on every (sub)command, so it works before or after the command (`allinone eval ... --debug`)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print its full traceback")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in {id(c): c for c in action.choices.values()}.values():  # aliases share a parser
                _add_debug(child)


def _add_lowering_options(p: argparse.ArgumentParser, *, jobs: bool) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="lowering cache to read and fill (default: programs/ in the "
                   "user's cache directory, $ALLINONE_CACHE_DIR or ~/.cache/allinone)")
    p.add_argument("--no-cache", action="store_true", help="lower every system, reading and storing nothing")
    if jobs:
        p.add_argument("--jobs", type=int, default=None, metavar="N", help="systems lowered at once, each in its "
                       "own process (default: as many as cores and memory allow)")


def _lowering_cache(args: argparse.Namespace):
    from allinone.lowering_cache import LoweringCache

    return LoweringCache.from_options(args.cache_dir, args.no_cache)


def _cmd_cache_list(args: argparse.Namespace) -> int:
    from allinone.lowering_cache import LoweringCache, format_listing

    cache = LoweringCache.from_options(args.cache_dir, False)
    if args.json:
        print(json.dumps({"directory": str(cache.directory), "entries": [e.to_dict() for e in cache.entries()]},
                         indent=2))
    else:
        print(format_listing(cache))
    return 0


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    from allinone.lowering_cache import LoweringCache

    cache = LoweringCache.from_options(args.cache_dir, False)
    removed, freed = cache.clear()
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'}, {freed / 2**20:.2f} MiB freed from {cache.directory}")
    return 0


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="also log each layer left in float and ExecuTorch's "
                   "own informational output (its CPU probe)")


def _verbose_logging(verbose: bool) -> None:
    """--verbose: the debug lines of allinone and of the runtime too."""
    import logging

    if verbose:
        for name in ("allinone", "allinone_runtime"):
            logging.getLogger(name).setLevel(logging.DEBUG)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_import_hf(args: argparse.Namespace) -> int:
    from allinone.hf_import import import_hf

    search = {key: value for key, value in (("depths", args.depths), ("ffn_dims", args.ffn_dims),
                                            ("head_choices", args.heads), ("weight_bits", args.weight_bits)) if value}
    print(import_hf(args.directory, args.out, search=search, reorder=not args.no_reorder, force=args.force))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from allinone.eval_run import evaluate_checkpoint
    from allinone.evaluate import format_results_table, results_to_json

    decoder = _decoder_options(args) if args.lm else None
    timings: dict[str, float] = {}
    results = evaluate_checkpoint(args.checkpoint, args.manifest, subnets=args.subnet, all_systems=args.all,
                                  hyps_dir=args.hyps_dir, progress=not args.json, lm=args.lm, decoder=decoder,
                                  timings=timings)
    print(results_to_json(results) if args.json else format_results_table(results))
    if args.lm:
        print(f"decoding time: network {timings['network_s']:.2f} s, greedy {timings['greedy_s']:.3f} s, "
              f"beam+LM {timings['beam_s']:.2f} s ({timings['beam_s'] / max(timings['greedy_s'], 1e-9):.0f}x greedy; "
              f"beam+LM adds {timings['beam_s'] / timings['network_s']:.0%} to the network's time); "
              f"{decoder.to_dict()}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_lm_build(args: argparse.Namespace) -> int:
    from allinone.lm import DEFAULT_MAX_BYTES, build_lm

    built = build_lm(args.text, args.order, args.out, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
                     min_word_count=args.min_word_count)
    pruned = f", n-grams seen fewer than {built.min_count} times pruned" if built.min_count > 1 else ""
    print(f"{built.out}: {built.order}-gram LM of {built.words:,} words from {built.sentences:,} sentences, "
          f"n-grams {'/'.join(f'{c:,}' for c in built.counts)}, lm.arpa {built.arpa_bytes:,} bytes{pruned}")
    return 0


def _verify_audio(path: str | None):
    if path is None:
        return None
    import torch

    from allinone.data.audio import load_audio

    return torch.from_numpy(load_audio(path))[None]


def _cmd_build(args: argparse.Namespace) -> int:
    import json

    from allinone.build import build_bundles
    from allinone.profiles import list_profiles

    _verbose_logging(args.verbose)
    profiles = list_profiles() if args.all_profiles else args.profile
    decoder = _checked_lm(args)
    cost = None
    if decoder is not None:
        from allinone.memory import decoder_cost

        cost = decoder_cost(args.lm, decoder.beam)
    built, failures = build_bundles(args.checkpoint, profiles, args.out, force=args.force,
                                    audio=_verify_audio(args.verify_audio), progress=not args.json, decoder=cost,
                                    cache=_lowering_cache(args), jobs=args.jobs)
    if decoder is not None:
        from allinone.bundle_lm import attach_lm

        for b in built:
            attach_lm(b.path, args.lm, decoder, audio=args.verify_audio)
    if args.json:
        print(json.dumps({"bundles": [b.to_dict() for b in built], "failures": [f.to_dict() for f in failures]}, indent=2,
                         allow_nan=False))
    else:
        for b in built:
            note = " (lowering reused)" if b.reused_lowering else ""
            print(f"{b.profile:<22} {b.subnet:<16} {b.pte_bytes / 2**20:7.2f} MiB  {b.path}{note}")
        for f in failures:
            print(f"allinone: error: {f.profile}: {f.reason}", file=sys.stderr)
    return max((f.exit_code for f in failures), default=0)


def _cmd_runner(args: argparse.Namespace) -> int:
    from allinone.runner import write_runner_folder

    out = write_runner_folder(args.out, args.target, force=args.force)
    manifest = json.loads((out / "runner.json").read_text())
    print(f"{out}: {args.target} runner, ExecuTorch {manifest['executorch']}, {len(manifest['files'])} files "
          f"(needs glibc >= {manifest['requires']['glibc']}); see {out / 'README.md'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from allinone.build import export_bundle

    _verbose_logging(args.verbose)
    decoder = _checked_lm(args)
    path = export_bundle(args.checkpoint, args.subnet, args.out, force=args.force, audio=_verify_audio(args.verify_audio),
                         cache=_lowering_cache(args))
    if decoder is not None:
        from allinone.bundle_lm import attach_lm

        attach_lm(path, args.lm, decoder, audio=args.verify_audio)
    print(path)
    return 0


def _checked_lm(args: argparse.Namespace):
    """With --lm: the decoder options, after reading the LM once so a bad one fails before any lowering."""
    if not args.lm:
        return None
    from allinone_runtime.ngram import load_lm

    load_lm(args.lm)
    return _decoder_options(args)


def _float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _cmd_tune_decoder(args: argparse.Namespace) -> int:
    from allinone.tune_decoder import DEFAULT_LM_WEIGHTS, DEFAULT_WORD_BONUSES, tune_decoder

    result = tune_decoder(args.bundle, args.manifest, out=args.out, force=args.force,
                          lm_weights=args.lm_weights or DEFAULT_LM_WEIGHTS,
                          word_bonuses=args.word_bonuses or DEFAULT_WORD_BONUSES)
    print(f"greedy WER {result.greedy_wer:.2%}")
    for weight, bonus, wer in result.rows:
        print(f"lm_weight {weight:<5g} word_bonus {bonus:<5g} WER {wer:.2%}")
    print(f"{result.out}: decoder defaults {result.best}")
    return 0


def _cmd_lm_attach(args: argparse.Namespace) -> int:
    from allinone.bundle_lm import attach_lm

    if not args.lm:
        raise AllinoneError("lm attach: expected --lm LM_DIR")
    out = attach_lm(args.bundle, args.lm, _decoder_options(args), out=args.out, force=args.force)
    verification = json.loads((out / "manifest.json").read_text())["decoder"]["verification"]
    print(f"{out}: LM attached; sample clip greedy {verification['greedy_text']!r}, with the LM {verification['text']!r}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from allinone.package import describe_bundle, read_bundle_manifest

    print(json.dumps(read_bundle_manifest(args.bundle), indent=2, allow_nan=False) if args.json
          else describe_bundle(args.bundle))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from allinone.demo import format_summary, run_demo

    _verbose_logging(args.verbose)
    result = run_demo(args.checkpoint, args.out, audio=args.audio, profiles=args.profile, threads=args.threads,
                      measure_host=not args.static_host_profile, cache=_lowering_cache(args), jobs=args.jobs)
    print(format_summary(result))
    return result.exit_code


def _cmd_train(args: argparse.Namespace) -> int:
    from allinone.train.recipe import load_recipe
    from allinone.train.trainer import train

    result = train(load_recipe(args.recipe), args.train, args.dev, args.out, max_steps=args.max_steps,
                   resume=args.resume, only=args.only, init=args.init, progress=not args.no_progress,
                   skip_nonfinite=args.skip_nonfinite)
    rate = result.audio_seconds / max(result.seconds, 1e-9)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s ({rate:.1f} audio-s/s) -> {result.out}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from allinone.pack import pack_checkpoint

    checked = pack_checkpoint(args.checkpoint, args.out, dtype=args.dtype, dev=args.dev, log_every=args.log_every,
                              force=args.force, max_wer_change=args.max_wer_change)
    if checked["dev_wer_before"] is not None:
        print(f"{checked['subnet']} dev WER {checked['dev_wer_before']:.2%} in float32, "
              f"{checked['dev_wer_after']:.2%} as stored ({args.dtype})")
    print(args.out)
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
    text = json.dumps(data, indent=2, allow_nan=False) if args.json else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    print(text.rstrip("\n"))
    return 0


def _cmd_profiles_measure(args: argparse.Namespace) -> int:
    from allinone.profile_measure import measure_profile

    result = measure_profile(args.checkpoint, args.out, threads=args.threads, runs=args.runs, base=args.base,
                             name=args.name, jobs=args.jobs)
    model = result.profile.latency_model
    print(f"{result.path}: {result.profile.name}, {result.profile.threads} threads, isa "
          f"{', '.join(result.profile.isa) or 'none'}; fit max error {model.fit.max_error_pct:g}%, leave-one-out "
          f"max {model.fit.loo_max_error_pct:g}% over {model.fit.systems} systems")
    for (subnet, ms), err in zip(result.systems, result.loo_errors):
        print(f"  {subnet}: {ms:.1f} ms measured, leave-one-out {err:+.1%}")
    print("  " + "; ".join(result.notes))
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
    from allinone.select import checkpoint_catalog, explain_table, select, selection_to_json

    profile = load_profile(args.profile)
    catalog = checkpoint_catalog(args.checkpoint) if args.checkpoint else load_catalog(args.catalog)
    cost = None
    if args.lm:
        from allinone.memory import decoder_cost
        from allinone_runtime.beam import DecoderOptions

        cost = decoder_cost(args.lm, args.beam if args.beam is not None else DecoderOptions.beam)
    elif args.beam is not None:
        raise AllinoneError("select: --beam counts the decoder of an LM; expected --lm LM_DIR with it")
    selection = select(catalog, profile, cost)
    if args.json:
        print(selection_to_json(selection))
        return 0
    c = selection.chosen
    wer = "not measured" if c.entry.wer is None else f"{c.entry.wer:.2%}"
    lm = "" if cost is None else (f" + LM {cost.lm_bytes / 2**20:.2f} MiB, peak {c.peak_bytes / 2**20:.1f} MiB "
                                  f"(decoder {cost.peak_bytes / 2**20:.1f} MiB at beam {cost.beam})")
    print(f"{c.entry.subnet}: WER {wer}, {c.model_bytes / 2**20:.1f} MiB{lm}, {c.latency_kind} RTF {c.rtf:.3f} ({c.latency_ms:.0f} ms for "
          f"{selection.profile.latency.reference_audio_s:g} s) on {selection.profile.name}")
    if args.explain:
        print(explain_table(selection))
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    import json

    from allinone.catalog import format_catalog
    from allinone.catalog_compute import compute_catalog
    from allinone.latency import read_report

    reports = [read_report(path) for path in args.report]  # all checked before minutes of work start
    run = compute_catalog(args.checkpoint, args.manifest, all_systems=args.all, activations=not args.no_activations,
                          reports=reports, force=args.force, progress=not args.json)
    if args.json:
        print(json.dumps(run.catalog.to_dict(), indent=2, allow_nan=False))
        return 0
    print(format_catalog(run.catalog))
    print(f"{run.path}: {len(run.catalog.entries)} systems; evaluated {len(run.evaluated)}, reused "
          f"{len(run.reused)}, activations measured on {len(run.measured)}"
          + (f" ({', '.join(run.measured)}; {len(run.from_cache)} read from the lowering cache)" if run.measured else "")
          + (f"; {len(run.dropped)} WERs from other weights or another dev set discarded" if run.dropped else ""))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from allinone.latency import calibrate_profile, read_report, save_profile
    from allinone.profiles import load_profile

    profile = load_profile(args.profile)
    reports = [read_report(path) for path in args.report]
    result = calibrate_profile(profile, reports, force=args.force)
    out = save_profile(result.profile, args.out or f"{profile.name}.calibrated.yaml",
                       header=f"Calibrated by `allinone calibrate` from {', '.join(args.report)}.")
    model = result.profile.latency_model
    figures = ", ".join(f"{k} {v:g}" for k, v in vars(model.throughput_gmacs).items() if v is not None)
    print(f"{out}: overhead_ms {model.overhead_ms:g}, GMAC/s {figures} (workload_factor 1); largest fit error "
          f"{result.fit.max_abs_error:.1%}, uncertainty_pct {model.uncertainty_pct:g}")
    for note in result.notes[1:]:
        print(f"  {note}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from allinone.data.synth import synthesize

    report = synthesize(args.out, args.hours, args.seed, args.jobs, augment=args.augment, strict=args.strict,
                        eval_hours=args.eval_hours, corpus_version=args.corpus_version)
    print(report.summary())
    return 0


def _cmd_data_text(args: argparse.Namespace) -> int:
    from pathlib import Path

    from allinone.data.synth import split_text
    from allinone.files import atomic_write_text

    lines = split_text(args.corpus, args.split)
    atomic_write_text(Path(args.out), "".join(f"{line}\n" for line in lines))
    print(f"{args.out}: {len(lines)} {args.split} sentences of {args.corpus}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    import logging

    from allinone.data.manifest import read_manifest

    logging.getLogger("allinone.data.manifest").setLevel(logging.ERROR)  # problems are printed below
    deep = args.strict if args.deep is None else args.deep
    result = read_manifest(args.manifest, strict=args.strict, deep=deep)
    for problem in result.problems:
        print(f"skipped {problem}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning {warning}", file=sys.stderr)
    print(result.summary())
    return 0


# --- eval / compare (issue 4) ---
def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from allinone.evaluate import compare_files, format_comparison

    result = compare_files(args.hyp_a, args.hyp_b)
    if args.json:
        print(json.dumps({"hyp_a": args.hyp_a, "hyp_b": args.hyp_b, **result.to_dict()}, indent=2, allow_nan=False))
    else:
        print(format_comparison(result, args.hyp_a, args.hyp_b))
    return 0


# --- runtime (issue 7) ---
def _cmd_transcribe(args: argparse.Namespace) -> int:
    from allinone_runtime.commands import transcribe_command

    from allinone_runtime.__main__ import decoder_arguments

    return transcribe_command(args.bundle, args.files, as_json=args.json, threads=args.threads, prog="allinone",
                              **decoder_arguments(args))


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib.resources

    from allinone_runtime.commands import bench_command

    audio = args.audio or str(importlib.resources.files("allinone") / "assets" / "sample.wav")
    return bench_command(args.bundle, args.out, lengths=args.lengths, runs=args.runs, threads=args.threads,
                         etdump=args.etdump, audio=audio, runner=args.runner)


def _cmd_report(args: argparse.Namespace) -> int:
    from allinone_runtime.commands import report_command

    return report_command(args.dist)


def _configure_logging() -> None:
    """The CLI is an application, so it sets up logging (the library never does)."""
    import logging

    from allinone.notices import quiet_library_notices

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_library_notices()


def _one_line(err: BaseException) -> str:
    """An error's message as one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message; the original `module.Class: message` is that traceback's last line."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("allinone: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - no input may end in a traceback; --debug shows it
        if args.debug:
            raise
        if isinstance(err, (AllinoneError, RuntimeInputError)):  # RuntimeInputError: allinone_runtime's (issue 7)
            print(f"allinone: error: {_one_line(err)}", file=sys.stderr)
            return err.exit_code
        print(f"allinone: error: unexpected {type(err).__name__}: {_one_line(err)} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
