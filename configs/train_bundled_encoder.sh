#!/usr/bin/env bash
# Reproduces the bundled encoder, pixelsplat_ns/assets/weights/tiny.ckpt: the `tiny`
# architecture trained on CPU with `ns-train pixelsplat-pretrain` on real scenes of
# ../shared/data. Held out for evaluation (benchmarks/feedforward.py): llff-fern and the
# three strecha-* scenes, which it never sees.
#
#   bash configs/train_bundled_encoder.sh            # STEPS=8000 by default (about 50 min on 2 CPU cores)
#   STEPS=500 bash configs/train_bundled_encoder.sh  # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-8000}
DATA=${DATA:-../shared/data}
OUT=${OUT:-outputs/bundled-encoder}
SCENES="pavilion-chair-midday pavilion-chair-sunset pavilion-chair-night middlebury-temple-sparse dtu-vase"

scenes_dir=$(mktemp -d)
trap 'rm -rf "$scenes_dir"' EXIT
for scene in $SCENES; do ln -s "$(realpath "$DATA/$scene")" "$scenes_dir/$scene"; done

.venv/bin/ns-train pixelsplat-pretrain \
  --data "$scenes_dir" --output-dir "$OUT" --experiment-name tiny --timestamp run \
  --max-num-iterations "$STEPS" --steps-per-save 250 --steps-per-eval-batch 100 --steps-per-eval-image 250 \
  --steps-per-eval-all-images 1000000 --logging.steps-per-log 50 \
  --machine.seed 0 \
  --pipeline.model.encoder tiny --pipeline.model.encoder-checkpoint-every 100 \
  --pipeline.model.gaussians-per-pixel 1 \
  --pipeline.datamanager.examples.image-shape 64 64 \
  --pipeline.datamanager.examples.num-target-views 2 \
  --pipeline.datamanager.examples.min-gap 2 --pipeline.datamanager.examples.max-gap 6 \
  --optimizers.encoder.optimizer.lr 3e-4 \
  --optimizers.encoder.scheduler.warmup-steps 50 --optimizers.encoder.scheduler.max-steps "$STEPS"

final=$(ls "$OUT"/tiny/pixelsplat-pretrain/run/encoders/encoder-step-*.ckpt | sort | tail -n 1)
mkdir -p pixelsplat_ns/assets/weights
cp "$final" pixelsplat_ns/assets/weights/tiny.ckpt
echo "bundled encoder: $final -> pixelsplat_ns/assets/weights/tiny.ckpt"
