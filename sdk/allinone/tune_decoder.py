"""`allinone tune-decoder`: search a bundle's LM weight and word bonus on a dev manifest, write them as its defaults.

The bundle's own program computes each utterance's log-probs once (as `transcribe` does, through
`Transcriber.log_probs`); every setting of the grid then decodes them with the bundle's LM, scored by
corpus WER against the manifest's normalised transcripts. The best setting (ties: the earlier in the grid)
becomes the manifest's `decoder.defaults` in a new bundle, written atomically by `bundle_lm.attach_lm`. Give it
a dev set, never the test set its WER will be reported on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

from allinone.errors import BadInputError

__all__ = ["TuneResult", "tune_decoder", "DEFAULT_LM_WEIGHTS", "DEFAULT_WORD_BONUSES"]

DEFAULT_LM_WEIGHTS = (0.5, 0.7, 0.9, 1.1)
DEFAULT_WORD_BONUSES = (1.5, 2.5, 3.5, 4.5)


@dataclass(frozen=True)
class TuneResult:
    out: Path
    best: dict  # the chosen decoder settings
    greedy_wer: float
    rows: list[tuple[float, float, float]]  # (lm_weight, word_bonus, WER) in grid order


def _wer(refs: list[str], hyps: list[str]) -> float:
    from allinone.evaluate import score_utterance

    hyps_scored = [score_utterance(str(k), r, h) for k, (r, h) in enumerate(zip(refs, hyps))]
    return sum(h.errors for h in hyps_scored) / sum(h.ref_words for h in hyps_scored)


def tune_decoder(bundle: str | Path, manifest: str | Path, *, out: str | Path | None = None,
                 lm_weights=DEFAULT_LM_WEIGHTS, word_bonuses=DEFAULT_WORD_BONUSES, force: bool = False,
                 progress: bool = True) -> TuneResult:
    from tqdm.auto import tqdm

    from allinone.bundle_lm import attach_lm
    from allinone.data.manifest import read_manifest
    from allinone_runtime.audio import read_audio
    from allinone_runtime.ctc import decode_greedy, greedy_ids
    from allinone_runtime.decoder import bundle_decoder
    from allinone_runtime.transcribe import Transcriber

    bundle = Path(bundle)
    transcriber = Transcriber(bundle, greedy=True)
    b = transcriber.bundle
    decoder = bundle_decoder(b)
    if decoder is None:
        raise BadInputError(f"{bundle}: no LM to tune; add one first (`allinone lm attach --bundle {bundle} --lm LM_DIR`)")
    utterances = read_manifest(manifest).utterances
    if not utterances:
        raise BadInputError(f"manifest {manifest}: no usable utterances")
    refs, log_probs = [], []
    for u in tqdm(utterances, desc="log-probs", unit="utt", disable=not progress, leave=False):
        lp, _ = transcriber.log_probs(read_audio(u.audio_filepath, b.sample_rate).samples)
        log_probs.append(lp)
        refs.append(u.text)
    greedy = _wer(refs, [decode_greedy(greedy_ids(lp), b.vocab, b.frame_shift_s)[0] for lp in log_probs])
    rows = []
    grid = list(itertools.product(lm_weights, word_bonuses))
    for weight, bonus in tqdm(grid, desc="settings", unit="setting", disable=not progress, leave=False):
        trial = decoder.with_options(replace(decoder.options, lm_weight=weight, word_bonus=bonus))
        rows.append((weight, bonus, _wer(refs, [trial.decode(lp) for lp in log_probs])))
    weight, bonus, _ = min(rows, key=lambda r: r[2])
    best = replace(decoder.options, lm_weight=weight, word_bonus=bonus)
    written = attach_lm(bundle, bundle / b.manifest["decoder"]["lm"]["dir"], best, out=out, force=force)
    return TuneResult(written, best.to_dict(), greedy, rows)
