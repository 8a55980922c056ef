#!/usr/bin/env bash
# Every number the motion model's README table gives, for one checkpoint:
#   bash examples/camera/evaluate_motion.sh WEIGHTS OUT [WORKDIR] [OPENCV_VIDEOS]
# WEIGHTS: a checkpoint or registry name; OUT: a folder for the reports; WORKDIR (default data) holds
# camera/test and objects/test (examples/camera/make_dataset.py); OPENCV_VIDEOS, if given, holds
# OpenCV's cup.mp4 and box.mp4 (evaluation only: see benchmarks/RESULTS.md for how to get them).
set -euo pipefail
WEIGHTS=$1
OUT=$2
WORK=${3:-data}
OPENCV=${4:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIFA=${SIFA:-sifa}
mkdir -p "$OUT"

# 1. accuracy on the camera test split (420 clips)
$SIFA evaluate "$WORK/camera/test" --weights "$WEIGHTS" --out "$OUT/eval_test" > "$OUT/eval_test.log"
tail -n 3 "$OUT/eval_test.log"
# 2. does SIFA carry the motion: agreement, size, SIFA on/off
PYTHONPATH="$ROOT" python "$ROOT/benchmarks/bench_sifa_motion.py" "$WORK/camera/test" --weights "$WEIGHTS" \
    --json "$OUT/motion_test.json" | tail -n 12
# 3. fixed shots with one large moving object (the object task's 160 test clips): share read `static`
$SIFA predict "$WORK/objects/test" --weights "$WEIGHTS" --format json -o "$OUT/objects.json" > /dev/null
python - "$OUT/objects.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
static = sum(r["top"][0]["label"] == "static" for r in rows)
print(f"objects task: {static}/{len(rows)} clips read static ({100 * static / len(rows):.1f} %)")
PY
# 4. OpenCV's real fixed shots, window by window
if [ -n "$OPENCV" ]; then
    for video in cup.mp4 box.mp4; do
        $SIFA predict "$OPENCV/$video" --weights "$WEIGHTS" --timeline --window 1.3 --stride 0.5 \
            --format json -o "$OUT/${video%.mp4}.json" > /dev/null
        python - "$OUT/${video%.mp4}.json" "$video" <<'PY'
import json, sys
windows = json.load(open(sys.argv[1]))[0]["windows"]
static = sum(w["top"][0]["label"] == "static" for w in windows)
print(f"{sys.argv[2]}: {static}/{len(windows)} windows read static")
PY
    done
fi
