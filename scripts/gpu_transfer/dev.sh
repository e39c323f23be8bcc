#!/usr/bin/env bash
# On the device machine, from the repo root:
#   dev.sh setup            wheels -> /tmp/site, 8-bit warm start -> /tmp/gpu/init (float32 checkpoint),
#                           the manifest of all parts -> /tmp/gpu
#   dev.sh stash DIR        unpack DIR/part-*.opus into /tmp/gpu/data (kept while the machine stays warm)
#   dev.sh first SECS STEPS a fresh run (cosine over STEPS) for SECS seconds; prints the step rate
#   dev.sh more SECS STEPS  resume it for SECS seconds at most (STEPS may change), weights -> $OUT
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD/sdk:$PWD/runtime PYTHONUNBUFFERED=1
D=/tmp/gpu
T0=$(date +%s)
say() { echo "[dev.sh +$(( $(date +%s) - T0 ))s] $*"; }
train() {  # SECS STEPS RUN [--resume]
  # The manifest lists every part's utterances (those not stashed yet are skipped with a warning, so a run
  # resumed after the next stash sees the same manifest); three passes per "epoch": fewer data-loader restarts,
  # each copy augmented differently (the draw is keyed by position).
  [ -f $D/train.jsonl ] || for k in 1 2 3; do cat $D/manifest.jsonl; done > $D/train.jsonl
  head -100 $D/manifest.jsonl > $D/dev.jsonl
  say "training: $(ls $D/data/wav | wc -l) utterances stashed, at most $1 s, $2 steps -> $3 ${4:-}"
  timeout -k 90 -s TERM "$1" python3 -c "import sys; from allinone.cli import main; sys.exit(main())" \
    train --recipe "${RECIPE:-recipes/conformer_medium_gpu.yaml}" --train $D/train.jsonl --dev $D/dev.jsonl --out "$3" --init $D/init \
    --max-steps "$2" --no-progress ${4:-} 2>&1 | grep -v "^WARNING allinone.data.manifest: skipping" | tail -25
  say "trainer exited"
  python3 - "$3" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
print(f"steps {rows[-1]['step']}, {rows[-1]['elapsed_s']:.0f} s, {rows[-1]['audio_h']:.1f} h audio")
if len(rows) > 20:
    a, b = rows[10], rows[-1]
    print(f"after warm-up: {(b['step'] - a['step']) / (b['elapsed_s'] - a['elapsed_s']):.3f} steps/s, "
          f"{(b['audio_h'] - a['audio_h']) * 3600 / (b['elapsed_s'] - a['elapsed_s']):.0f} audio-s/s")
for r in rows[:: max(1, len(rows) // 12)] + rows[-1:]:
    print(r["step"], r["lr"], r["loss"], {k: v for k, v in r["ctc"].items()})
PY
}
case "$1" in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHEELS:-.gpu/whl}/*.whl || exit 1
  python3 scripts/gpu_transfer/weights.py from8 ${INIT8:-.gpu/init8} $D/init || exit 1
  zcat ${MANIFEST:-.gpu/manifest.jsonl.gz} > $D/manifest.jsonl
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
  say "setup done"
  ;;
stash)
  ls "$2"/part-*.opus | xargs -P 16 -I{} python3 scripts/gpu_transfer/opus_corpus.py unpack {} --out $D/data/wav || exit 1
  say "stashed: $(ls $D/data/wav | wc -l) utterances, $(du -sh $D/data | cut -f1)"
  ;;
first)  # SECS STEPS: a fresh run from the warm start (also the probe: step rate, GPU use)
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 15 &
  NV=$!
  train "$2" "$3" $D/run
  kill $NV
  ;;
more)  # SECS STEPS: resume the run (STEPS may change the cosine's end), then send its weights back
  train "$2" "$3" $D/run --resume
  python3 scripts/gpu_transfer/weights.py split $D/run "$OUT" || exit 1
  gzip -c $D/run/metrics.jsonl > "$OUT/metrics.jsonl.gz"
  ls -l "$OUT"
  say "done"
  ;;
esac
