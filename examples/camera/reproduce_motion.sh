#!/usr/bin/env bash
# Reproduce sifa_motion_small_camera (the motion design: frame-wise stem, SIFA motion readout, alignment
# loss) and its SIFA-off ablation with the same data and schedule, then measure whether SIFA carries the
# motion. The corpus is the one examples/camera/reproduce.sh renders (same seed: the test split is the
# default model's).
#
#   bash examples/camera/reproduce_motion.sh [WORKDIR] [DEVICE] [TRAIN_PER_CLASS] [EPOCHS]
#   defaults: data auto 150 10   (150 clips per class, 10 + 6 epochs, 2 CPU cores, ~25 + 12 min; then
#   400 clips per class with large objects crossing fixed shots, 8 + 10 epochs, ~40 + 50 min; then
#   layer2's window dilated, 5 epochs, ~27 min, and its control without the dilation, ~27 min; then
#   5 epochs with the displacement loss, ~27 min; then 3 epochs at 12 frames a clip, ~25 min, 3 more at a
#   lower rate, ~25 min, and 2 at 160 px, ~26 min, whose weights spread over 3.2 s a clip are trained 2 more epochs, ~21 min, then 2 more with new `static` clips, ~18 min: the registry's file; then the SIFA-off ablation of the second and third runs, ~10 + 40 min)
set -euo pipefail
WORK=${1:-data}
DEVICE=${2:-auto}
PER_CLASS=${3:-150}
EPOCHS=${4:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SIFA=${SIFA:-sifa}

# Every run: the motion design, clips at step 4, batch 8, AdamW, crops down to half the frame, on DEVICE.
# CORPUS holds train/ and val/; the options after OUT are what the run changes.
motion_run() {  # CORPUS INIT OUT [finetune options...]
    local corpus=$1 init=$2 out=$3
    shift 3
    $SIFA finetune "$corpus/train" --val "$corpus/val" --init "$init" --model sifa_motion_small --step 4 \
        --batch-size 8 --optimizer adamw --min-crop-area 0.5 --device "$DEVICE" --out "$out" "$@"
}

python "$HERE/make_dataset.py" fetch "$WORK/sources"
python "$HERE/make_dataset.py" make "$WORK/sources" "$WORK/camera" --train "$PER_CLASS" --val 20 --test 60 --seed 0
# Start: the earlier default's weights carried over (stem summed over time; offsets and readout fresh).
python "$HERE/motion_init.py" "$WORK/runs/motion_init.safetensors" --frames 8 --step 4

for variant in sifa nosifa; do
    flag=$([ "$variant" = sifa ] && echo --sifa || echo --no-sifa)
    motion_run "$WORK/camera" "$WORK/runs/motion_init.safetensors" "$WORK/runs/motion_$variant" \
        --frames 8 --size 128 --resize 128 --epochs "$EPOCHS" --lr 0.002 --warmup-epochs 1 --seed 0 $flag
done
# A second run from the first's best checkpoint, at half the learning rate.
motion_run "$WORK/camera" "$WORK/runs/motion_sifa/best.safetensors" "$WORK/runs/motion_sifa_2" \
    --frames 8 --size 128 --resize 128 --epochs 6 --lr 0.001 --warmup-epochs 1 --seed 1
# A third run on 400 clips per class whose fixed shots are crossed fast by one large
# object in 40 % of the static clips (the test split stays the corpus's), its offset convolutions at 4x
# the learning rate (a config-file key).
python "$HERE/make_dataset.py" make "$WORK/sources" "$WORK/camera2" --train 400 --val 20 --test 0 --only train val \
    --seed 0 --static-large-objects 0.4
printf 'offset_lr_scale: 4\n' > "$WORK/runs/offset_lr.yaml"
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_2/best.safetensors" "$WORK/runs/motion_sifa_3" \
    --config "$WORK/runs/offset_lr.yaml" --frames 8 --size 128 --resize 128 --epochs 8 --lr 0.001 \
    --warmup-epochs 1 --seed 2
# A fourth run from the third's best, 10 more epochs at lr 0.0007.
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_3/best.safetensors" "$WORK/runs/motion_sifa_4" \
    --config "$WORK/runs/offset_lr.yaml" --frames 8 --size 128 --resize 128 --epochs 10 --lr 0.0007 \
    --warmup-epochs 0.5 --seed 3
# A fifth run from the fourth's best with layer2's SIFA window dilated to 2 (its
# offsets reset to zero), 5 epochs; and its control, the same 5 epochs without the dilation.
python "$HERE/widen_window.py" "$WORK/runs/motion_sifa_4/best.safetensors" "$WORK/runs/motion_wide_init.safetensors" \
    --dilation 2 1 1
for variant in sifa_5 sifa_5_control; do
    init=$([ "$variant" = sifa_5 ] && echo "$WORK/runs/motion_wide_init.safetensors" || echo "$WORK/runs/motion_sifa_4/best.safetensors")
    motion_run "$WORK/camera2" "$init" "$WORK/runs/motion_$variant" \
        --config "$WORK/runs/offset_lr.yaml" --frames 8 --size 128 --resize 128 --epochs 5 --lr 0.0007 \
        --warmup-epochs 0.5 --seed 4
done
# E14 (the registry's file until E21): a sixth run from the fifth's best with a displacement loss against each
# pan/tilt clip's translation (measured by phase correlation on its input frames;
# sifa_cli/models/motion_targets.py), 5 epochs at lr 0.0005.
printf 'offset_lr_scale: 4\ndisplacement_loss: 1.0\ntranslation_classes: pan left, pan right, tilt up, tilt down\n' \
    > "$WORK/runs/displacement.yaml"
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_5/best.safetensors" "$WORK/runs/motion_sifa_6" \
    --config "$WORK/runs/displacement.yaml" --frames 8 --size 128 --resize 128 --epochs 5 --lr 0.0005 \
    --warmup-epochs 0.5 --seed 5
# E21 (the registry's file before E22): a seventh run from the sixth's best at 12 frames (1.6 s, the same step 4),
# 3 epochs of the sixth's recipe; the file tests with three crops a clip (views 1x3).
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_6/best.safetensors" "$WORK/runs/motion_sifa_7" \
    --config "$WORK/runs/displacement.yaml" --frames 12 --size 128 --resize 128 --epochs 3 --lr 0.0005 \
    --warmup-epochs 0.5 --seed 11
# E22 (the registry's file before E23): an eighth run from the seventh's best, 3 more epochs of its recipe at lr 0.0003.
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_7/best.safetensors" "$WORK/runs/motion_sifa_8" \
    --config "$WORK/runs/displacement.yaml" --frames 12 --size 128 --resize 128 --epochs 3 --lr 0.0003 \
    --warmup-epochs 0.5 --seed 12
# E23 (the registry's file before E25, whose weights are E23's): a ninth run from the eighth's best at 160 px (the same clips, seen larger), 2
# epochs at lr 0.0002; the file tests at 160 px too.
motion_run "$WORK/camera2" "$WORK/runs/motion_sifa_8/best.safetensors" "$WORK/runs/motion_sifa_9" \
    --config "$WORK/runs/displacement.yaml" --frames 12 --size 160 --resize 160 --epochs 2 --lr 0.0002 \
    --warmup-epochs 0.3 --seed 13
# The SIFA-off ablation of the second and third runs: same data, schedule and seeds, --no-sifa.
motion_run "$WORK/camera" "$WORK/runs/motion_nosifa/best.safetensors" "$WORK/runs/motion_nosifa_2" \
    --frames 8 --size 128 --resize 128 --epochs 6 --lr 0.001 --warmup-epochs 1 --seed 1 --no-sifa
motion_run "$WORK/camera2" "$WORK/runs/motion_nosifa_2/best.safetensors" "$WORK/runs/motion_nosifa_3" \
    --config "$WORK/runs/offset_lr.yaml" --frames 8 --size 128 --resize 128 --epochs 8 --lr 0.001 \
    --warmup-epochs 1 --seed 2 --no-sifa
for run in motion_nosifa motion_sifa motion_sifa_2 motion_sifa_3 motion_sifa_4 motion_sifa_5 motion_sifa_5_control \
    motion_sifa_6 motion_sifa_7 motion_sifa_8 motion_sifa_9 motion_nosifa_2 motion_nosifa_3; do
    $SIFA evaluate "$WORK/camera/test" --weights "$WORK/runs/$run/best.safetensors" --out "$WORK/runs/$run/eval_test"
done
# The motion block: of the blocks whose displacements are within 2x of the true motion on the validation
# split, the one that agrees most (layer3.1 for the sixth to the ninth runs at 1.6 s, layer4.1 for E25 below);
# motion_finish.py names it in the file, with its views and the time a clip covers.
PYTHONPATH="$ROOT" python "$ROOT/benchmarks/bench_sifa_motion.py" "$WORK/camera2/val" \
    --weights "$WORK/runs/motion_sifa_9/best.safetensors" --json "$WORK/runs/motion_sifa_9/motion_val.json"
python "$HERE/make_dataset.py" make "$WORK/sources" "$WORK/objects" --task object --train 0 --val 0 --test 40
# E25: the ninth run's weights with its 12 frames spread over more time than the 1.6 s it trained on, the time
# chosen on the validation split (1.6 and 2.4 s: 95.7 %, 3.2 and 4.0 s: 96.4 %; the smaller taken), then the motion
# block measured again at that time (layer4.1: 98 % at 0.92 of the size).
for seconds in 1.6 2.4 3.2 4.0; do
    python "$HERE/motion_finish.py" "$WORK/runs/motion_sifa_9/best.safetensors" "$WORK/runs/motion_sifa_9/s$seconds.safetensors" \
        --block layer3.1 --views 1x3 --seconds "$seconds" --source "the ninth run of examples/camera/reproduce_motion.sh"
    $SIFA evaluate "$WORK/camera2/val" --weights "$WORK/runs/motion_sifa_9/s$seconds.safetensors" \
        --out "$WORK/runs/motion_sifa_9/val_s$seconds"
done
PYTHONPATH="$ROOT" python "$ROOT/benchmarks/bench_sifa_motion.py" "$WORK/camera2/val" \
    --weights "$WORK/runs/motion_sifa_9/s3.2.safetensors" --json "$WORK/runs/motion_sifa_9/motion_val_s3.2.json"
python "$HERE/motion_finish.py" "$WORK/runs/motion_sifa_9/best.safetensors" "$WORK/runs/motion_e25.safetensors" \
    --block layer4.1 --views 1x3 --seconds 3.2 --source "the ninth run of examples/camera/reproduce_motion.sh, its clips spread over 3.2 s"
# The runs from a file at 3.2 s a clip, which they keep (no --frames or --step; not motion_run: its --step 4 would
# bring the clip back to 12 x 4 / 30 = 1.6 s): 2 epochs at 160 px, then the blocks measured on the validation split,
# from which the motion block is chosen.
run_at_3s() {  # TRAIN_DIR INIT OUT SEED
    local train=$1 init=$2 out=$3 seed=$4
    $SIFA finetune "$train" --val "$WORK/camera2/val" --init "$init" \
        --config "$WORK/runs/displacement.yaml" --size 160 --resize 160 --epochs 2 --batch-size 8 --optimizer adamw \
        --lr 0.0002 --warmup-epochs 0.3 --min-crop-area 0.5 --seed "$seed" --device "$DEVICE" --out "$out"
    PYTHONPATH="$ROOT" python "$ROOT/benchmarks/bench_sifa_motion.py" "$WORK/camera2/val" \
        --weights "$out/best.safetensors" --json "$out/motion_val.json"
}
# E26, the registry's file before E30: a tenth run from E25's file; its motion block chosen as before (layer3.1 and
# layer4_dual.1 agree in 99 %; the finer grid taken), three crops a clip, 3.2 s.
run_at_3s "$WORK/camera2/train" "$WORK/runs/motion_e25.safetensors" "$WORK/runs/motion_sifa_10" 15
python "$HERE/motion_finish.py" "$WORK/runs/motion_sifa_10/best.safetensors" "$WORK/runs/motion_e26.safetensors" \
    --block layer3.1 --views 1x3 --seconds 3.2 --source "the tenth run of examples/camera/reproduce_motion.sh"
# E30, the registry's file and the default: an eleventh run from E26's file on camera2's six moves and new `static`
# clips (60 % crossed by one large object, half of those swinging near the lens; 30 % over a blurred, low-contrast
# photograph), seed 19; chosen over E26 on the validation split (as good) and the short-clips training set (real
# footage neither trained on: better), see the README's experiment table.
python "$HERE/make_dataset.py" make "$WORK/sources" "$WORK/camera4" --train 400 --val 0 --test 0 --only train --seed 0 \
    --static-large-objects 0.6 --swinging 0.5 --low-texture 0.3 --classes static
mkdir -p "$WORK/camera6/train"
ln -sfn "$(cd "$WORK/camera4/train/static" && pwd)" "$WORK/camera6/train/static"
for move in "pan left" "pan right" "tilt down" "tilt up" "zoom in" "zoom out"; do
    ln -sfn "$(cd "$WORK/camera2/train/$move" && pwd)" "$WORK/camera6/train/$move"
done
run_at_3s "$WORK/camera6/train" "$WORK/runs/motion_e26.safetensors" "$WORK/runs/motion_sifa_11" 19
python "$HERE/motion_finish.py" "$WORK/runs/motion_sifa_11/best.safetensors" "$WORK/runs/sifa_motion_small_camera.safetensors" \
    --block layer3.1 --views 1x3 --seconds 3.2 --source "the eleventh run of examples/camera/reproduce_motion.sh"
bash "$HERE/evaluate_motion.sh" "$WORK/runs/sifa_motion_small_camera.safetensors" "$WORK/runs/motion_sifa_11/eval" "$WORK"
