#!/usr/bin/env bash
# The DGMRec paper's Table 2a, TikTok columns, with every registered baseline: image + audio,
# 60 % of items missing a modality (the authors' mask), seeds 2024-2026, one shared trainer
# (`graphrec bench --trainer shared`; the authors' presets configs/<model>/tiktok.yaml where they
# exist), patience 30 evaluations, and an epoch cap chosen so that the whole bench fits in about
# 3.7 CPU hours on one core (docs/results.md, "Cost of the Table-2 bench"). Runs that reach the cap
# are flagged by bench (results.md, "capped"). Resumable: rerun the same command after an
# interruption; finished (model, seed) records are skipped.
#
#   benchmarks/table2_tiktok.sh [DATA_DIR] [OUT]          # defaults below
#   EPOCHS=40 benchmarks/table2_tiktok.sh ...             # another cap (a new OUT, or --rerun-changed)
#   benchmarks/table2_tiktok.sh DATA OUT --dry-run        # extra arguments go to graphrec bench
#
# DATA_DIR: an MMRec folder from `graphrec datasets prepare tiktok --out DIR`. Results on
# ../shared/data are for research use only (see each SOURCE.md licence).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/repro/data/tiktok}
OUT=${2:-bench-out/table2-tiktok}
shift $(( $# < 2 ? $# : 2 ))
EPOCHS=${EPOCHS:-30}
GRAPHREC=${GRAPHREC:-graphrec}
# DGMRec first: ratios and paired significance tests are against the first model.
MODELS=(dgmrec mfbpr ngcf lightgcn sgl simgcl vbpr mmgcn grcn slmrec bm3 lattice mgcn lgmrec damrs gume ci2mg milk sibrar freedom)
args=()
for m in "${MODELS[@]}"; do
  args+=(--model "$m")
  if [[ -f "configs/$m/tiktok.yaml" ]]; then args+=(--preset "$m=configs/$m/tiktok.yaml"); fi
done
exec env OMP_NUM_THREADS=1 "$GRAPHREC" bench --data-dir "$DATA" "${args[@]}" \
  --seeds 2024,2025,2026 --epochs "$EPOCHS" --threads 1 \
  --set missing_ratio=0.6 --set dataset=tiktok --set eval_mask_valid_in_test=false --set stopping_step=30 \
  --out "$OUT" "$@"
