#!/usr/bin/env bash
# Reproduces the bundled encoder, pixelsplat_ns/assets/weights/tiny.ckpt: the `tiny`
# architecture trained on CPU with `ns-train pixelsplat-pretrain`.
#
# Data: procedural rooms with exact geometry (`pixelsplat-ns synthesize`: textured walls,
# boxes and panels seen along 30-90 degree camera arcs), textured with scikit-image's bundled
# sample photographs and dtu-vase's frames, plus the real dtu-vase scene. Never seen: the
# held-out evaluation scenes (llff-fern, strecha-*; benchmarks/feedforward.py) and the demo's
# pavilion-chair-* scenes, so that the demo's table is a held-out measurement too.
# Wide baselines: context gaps grow from 2-6 to 2-12 frames (3-47 degrees), and the near plane
# is where the baseline gives 2 x min(h, w) pixels of disparity (recorded in the checkpoint).
#
#   bash configs/train_bundled_encoder.sh            # STEPS=7000 (about 45-50 min on 2 CPU cores)
#   STEPS=500 bash configs/train_bundled_encoder.sh  # a shorter run
# A stopped run resumes where it stopped: add  --load-dir $OUT/tiny/pixelsplat-pretrain/run/nerfstudio_models
# to the ns-train line (RESUME=1 does it) with the same STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-7000}
SCENES=${SCENES:-150}
DATA=${DATA:-../shared/data}
OUT=${OUT:-outputs/bundled-encoder}
WORK=${WORK:-$OUT/data}

if [ ! -d "$WORK/scenes/procedural" ]; then
  rm -rf "$WORK" && mkdir -p "$WORK/textures" "$WORK/scenes"
  skimage=$(.venv/bin/python -c "import skimage.data, os; print(os.path.dirname(skimage.data.__file__))")
  for name in astronaut brick chelsea coffee color grass gravel motorcycle_left retina rocket hubble_deep_field; do
    cp "$skimage/$name".* "$WORK/textures/" 2>/dev/null || true
  done
  .venv/bin/pixelsplat-ns synthesize --output-dir "$WORK/scenes/procedural" --num-scenes "$SCENES" --frames 24 \
    --image-size 128 128 --textures "$WORK/textures" "$DATA/dtu-vase/images" --seed 0
  ln -s "$(realpath "$DATA/dtu-vase")" "$WORK/scenes/dtu-vase"
fi

resume=()
if [ "${RESUME:-0}" = 1 ]; then resume=(--load-dir "$OUT/tiny/pixelsplat-pretrain/run/nerfstudio_models"); fi

.venv/bin/ns-train pixelsplat-pretrain \
  --data "$WORK/scenes" --output-dir "$OUT" --experiment-name tiny --timestamp run "${resume[@]}" \
  --max-num-iterations "$STEPS" --steps-per-save 250 --steps-per-eval-batch 500 --steps-per-eval-image 1000 \
  --steps-per-eval-all-images 1000000 --logging.steps-per-log 50 \
  --machine.seed 0 \
  --pipeline.model.encoder tiny --pipeline.model.encoder-checkpoint-every 250 \
  --pipeline.model.gaussians-per-pixel 1 \
  --pipeline.datamanager.examples.image-shape 64 64 \
  --pipeline.datamanager.examples.num-target-views 2 \
  --pipeline.datamanager.examples.near-disparity 2.0 \
  --pipeline.datamanager.examples.min-gap 2 --pipeline.datamanager.examples.max-gap 12 \
  --pipeline.datamanager.examples.initial-min-gap 2 --pipeline.datamanager.examples.initial-max-gap 6 \
  --pipeline.datamanager.examples.warmup-steps 2000 \
  --optimizers.encoder.optimizer.lr 3e-4 \
  --optimizers.encoder.scheduler.warmup-steps 100 --optimizers.encoder.scheduler.max-steps "$STEPS"

final=$(ls "$OUT"/tiny/pixelsplat-pretrain/run/encoders/encoder-step-*.ckpt | sort | tail -n 1)
mkdir -p pixelsplat_ns/assets/weights
cp "$final" pixelsplat_ns/assets/weights/tiny.ckpt
echo "bundled encoder: $final -> pixelsplat_ns/assets/weights/tiny.ckpt"
