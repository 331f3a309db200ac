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
# Then a second stage of AUGMENT_STEPS from the first stage's encoder: every gap of 2-12 frames from
# the start, crops zoomed 1-2x at random positions and colour jitter (examples.zoom-range,
# examples.color-jitter), learning rate 1e-4, so that the encoder meets scenes at several scales.
#
#   bash configs/train_bundled_encoder.sh            # STEPS=7000, AUGMENT_STEPS=6000 (about 50 + 53 min on 2 CPU cores)
#   STEPS=500 AUGMENT_STEPS=100 bash configs/train_bundled_encoder.sh  # a shorter run
# A finished stage is not run again. A stopped stage resumes where it stopped: RESUME=1 with the
# same STEPS and AUGMENT_STEPS adds  --load-dir $OUT/<stage>/pixelsplat-pretrain/run/nerfstudio_models
# to that stage's ns-train line and asks only for the steps still to do.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-7000}
AUGMENT_STEPS=${AUGMENT_STEPS:-6000}
SCENES=${SCENES:-150}
DATA=${DATA:-../shared/data}
OUT=${OUT:-outputs/bundled-encoder}
WORK=${WORK:-$OUT/data}

. configs/training_scenes.sh  # the training scenes, made once

# The last encoder of stage $1 of $2 steps (step $2 - 1); the stage is done when it is written.
last_encoder() { printf '%s/%s/pixelsplat-pretrain/run/encoders/encoder-step-%09d.ckpt' "$OUT" "$1" $(($2 - 1)); }
finished() { [ -f "$(last_encoder "$1" "$2")" ]; }

# With RESUME=1, a stage that saved nerfstudio checkpoints continues from its last one: sets the
# array `resume` (--load-dir) and `steps`, the steps still to do (nerfstudio's --max-num-iterations
# counts from the loaded step), for stage $1 of $2 steps.
resume_flags() {
  resume=()
  steps=$2
  local models="$OUT/$1/pixelsplat-pretrain/run/nerfstudio_models" last
  if [ "${RESUME:-0}" = 1 ] && compgen -G "$models/step-*.ckpt" > /dev/null; then
    last=$(ls "$models"/step-*.ckpt | sort | tail -n 1)
    last=${last##*/step-}
    resume=(--load-dir "$models")
    steps=$(($2 - 10#${last%.ckpt} - 1))
  fi
}

# What both stages share: data, seed, architecture, example size, near rule, final context gaps.
shared=(
  --data "$WORK/scenes" --output-dir "$OUT" --logging.steps-per-log 50 --steps-per-save 250
  --machine.seed 0
  --pipeline.model.encoder tiny --pipeline.model.encoder-checkpoint-every 250
  --pipeline.model.gaussians-per-pixel 1
  --pipeline.datamanager.examples.image-shape 64 64
  --pipeline.datamanager.examples.num-target-views 2
  --pipeline.datamanager.examples.near-disparity 2.0
  --pipeline.datamanager.examples.min-gap 2 --pipeline.datamanager.examples.max-gap 12
)

resume_flags tiny "$STEPS"
finished tiny "$STEPS" || .venv/bin/ns-train pixelsplat-pretrain \
  --experiment-name tiny --timestamp run "${resume[@]}" \
  --max-num-iterations "$steps" --steps-per-eval-batch 500 --steps-per-eval-image 1000 \
  --steps-per-eval-all-images 1000000 \
  "${shared[@]}" \
  --pipeline.datamanager.examples.initial-min-gap 2 --pipeline.datamanager.examples.initial-max-gap 6 \
  --pipeline.datamanager.examples.warmup-steps 2000 \
  --optimizers.encoder.optimizer.lr 3e-4 \
  --optimizers.encoder.scheduler.warm-up-end 100 --optimizers.encoder.scheduler.max-steps "$STEPS"

if [ "$AUGMENT_STEPS" -gt 0 ] && ! finished augment "$AUGMENT_STEPS"; then
  resume_flags augment "$AUGMENT_STEPS"
  .venv/bin/ns-train pixelsplat-pretrain \
    --experiment-name augment --timestamp run "${resume[@]}" \
    --max-num-iterations "$steps" --steps-per-eval-batch 500 \
    --steps-per-eval-image 1000000 --steps-per-eval-all-images 1000000 \
    "${shared[@]}" \
    --pipeline.model.init-checkpoint "$(last_encoder tiny "$STEPS")" \
    --pipeline.datamanager.examples.zoom-range 1.0 2.0 --pipeline.datamanager.examples.color-jitter 0.2 \
    --optimizers.encoder.optimizer.lr 1e-4 \
    --optimizers.encoder.scheduler.warm-up-end 50 --optimizers.encoder.scheduler.max-steps "$AUGMENT_STEPS"
fi
stage=tiny total=$STEPS
if [ "$AUGMENT_STEPS" -gt 0 ]; then stage=augment total=$AUGMENT_STEPS; fi
if ! finished "$stage" "$total"; then
  echo "recipe: stage $stage did not write its last encoder ($(last_encoder "$stage" "$total")); nothing copied" >&2
  exit 1
fi
final=$(last_encoder "$stage" "$total")
mkdir -p pixelsplat_ns/assets/weights
cp "$final" pixelsplat_ns/assets/weights/tiny.ckpt
echo "bundled encoder: $final -> pixelsplat_ns/assets/weights/tiny.ckpt"
