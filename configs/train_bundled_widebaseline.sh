#!/usr/bin/env bash
# Reproduces the bundled wide-baseline network, pixelsplat_ns/assets/weights/widebaseline-small.ckpt:
# Du et al.'s renderer in its `small` architecture, trained on CPU with `ns-train wide-baseline-pretrain`.
#
# Data: the bundled pixelSplat encoder's (configs/train_bundled_encoder.sh): procedural rooms with
# exact geometry textured with scikit-image's sample photographs and dtu-vase's frames, plus the
# real dtu-vase scene. Never seen: the held-out evaluation scenes (llff-fern, strecha-*) and the
# demo's pavilion-chair-* scenes. Examples are 128x128 (the architecture's input size), context
# gaps 2-12 frames, two targets per example, 256 random rays per target and step.
#
#   bash configs/train_bundled_widebaseline.sh              # STEPS=3000 (about 25 min on 2 CPU cores)
#   STEPS=200 bash configs/train_bundled_widebaseline.sh    # a shorter run
# A stopped run resumes where it stopped with RESUME=1 and the same STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-3000}
SCENES=${SCENES:-150}
DATA=${DATA:-../shared/data}
OUT=${OUT:-outputs/bundled-widebaseline}
WORK=${WORK:-outputs/bundled-encoder/data}  # shared with the encoder's recipe

. configs/training_scenes.sh  # the training scenes, made once

last=$(printf '%s/small/wide-baseline-pretrain/run/networks/network-step-%09d.ckpt' "$OUT" $((STEPS - 1)))
resume=()
steps=$STEPS
models="$OUT/small/wide-baseline-pretrain/run/nerfstudio_models"
if [ "${RESUME:-0}" = 1 ] && compgen -G "$models/step-*.ckpt" > /dev/null; then
  done_step=$(ls "$models"/step-*.ckpt | sort | tail -n 1)
  done_step=${done_step##*/step-}
  resume=(--load-dir "$models")
  steps=$((STEPS - 10#${done_step%.ckpt} - 1))
fi

[ -f "$last" ] || .venv/bin/ns-train wide-baseline-pretrain \
  --experiment-name small --timestamp run "${resume[@]}" \
  --data "$WORK/scenes" --output-dir "$OUT" --logging.steps-per-log 50 --steps-per-save 250 \
  --machine.seed 0 --vis tensorboard \
  --max-num-iterations "$steps" --steps-per-eval-batch 500 --steps-per-eval-image 1000000 \
  --steps-per-eval-all-images 1000000 \
  --pipeline.model.architecture small --pipeline.model.checkpoint-every 250 \
  --pipeline.model.rays-per-target 256 \
  --pipeline.datamanager.examples.image-shape 128 128 \
  --pipeline.datamanager.examples.num-target-views 2 \
  --pipeline.datamanager.examples.min-gap 2 --pipeline.datamanager.examples.max-gap 12 \
  --optimizers.network.optimizer.lr 3e-4 \
  --optimizers.network.scheduler.warm-up-end "$(( STEPS / 4 < 200 ? STEPS / 4 : 200 ))" --optimizers.network.scheduler.max-steps "$STEPS"

if [ ! -f "$last" ]; then
  echo "recipe: the run did not write its last network ($last); nothing copied" >&2
  exit 1
fi
mkdir -p pixelsplat_ns/assets/weights
cp "$last" pixelsplat_ns/assets/weights/widebaseline-small.ckpt
echo "bundled network: $last -> pixelsplat_ns/assets/weights/widebaseline-small.ckpt"
