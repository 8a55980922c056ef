#!/usr/bin/env bash
# Reproduce the earlier default model sifa_resnet_small_camera (the shipped default, sifa_motion_small_camera,
# starts from it: examples/camera/reproduce_motion.sh) end to end:
# fetch real imagery, render the corpus, fine-tune with `sifa finetune` (SIFA on, and the SIFA-off
# ablation), and score both on the test split (sources never seen in training).
#
#   bash examples/camera/reproduce.sh [WORKDIR] [DEVICE]      # defaults: data, auto
#
# On one GPU it takes minutes; on a 2-core CPU expect several hours for the two trainings.
set -euo pipefail
WORK=${1:-data}
DEVICE=${2:-auto}
HERE=$(cd "$(dirname "$0")" && pwd)
SIFA=${SIFA:-sifa}

python "$HERE/make_dataset.py" fetch "$WORK/sources"
python "$HERE/make_dataset.py" make "$WORK/sources" "$WORK/camera" --train 500 --val 50 --test 60 --seed 0

for variant in sifa nosifa; do
    flag=$([ "$variant" = sifa ] && echo --sifa || echo --no-sifa)
    $SIFA finetune "$WORK/camera/train" --val "$WORK/camera/val" --init scratch --model sifa_resnet_small \
        --frames 16 --step 2 --size 128 --resize 128 --epochs 14 --batch-size 32 --optimizer adamw --lr 0.002 \
        --warmup-epochs 1 --min-crop-area 0.5 --seed 0 --device "$DEVICE" $flag --out "$WORK/runs/camera_$variant"
done
for variant in sifa nosifa; do
    $SIFA predict "$WORK/camera/test" --weights "$WORK/runs/camera_$variant/best.safetensors" --format csv \
        --output "$WORK/runs/camera_$variant/test_predictions.csv"
done
