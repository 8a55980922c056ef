#!/usr/bin/env bash
# Every GPU check of issue 10 in one run, for a session that is lent a GPU machine for a few minutes.
#
#   bash benchmarks/gpu_session.sh [OUTDIR]       # OUTDIR: default $OUT (the device tool's), else ./gpu_session
#
# Runs from the checkout root with the machine's own python3 (PyTorch, Triton, torchvision there; no
# install, no network). Each step has its own time limit, so one that hangs or fails still leaves
# the others' results; each step's output goes to OUTDIR/<step>.log (7 files) and to stdout. The
# limits add up to 9 minutes, inside one 10-minute device command.
# Steps, most important first: environment, CUDA tests (ops, models, Triton kernel, the CLI), the
# Triton kernel against the definition, the model, the peer table, the training step, predict end
# to end.
# On a machine without CUDA it stops after the environment step: there is nothing to measure.

set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_session}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=160
python=${PYTHON:-python3}
failed=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (limit ${seconds}s): $*" | tee "$out/$name.log"
    local start=$SECONDS
    timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$out/$name.log"
    local status=${PIPESTATUS[0]}
    echo "=== $name: exit $status after $((SECONDS - start))s" | tee -a "$out/$name.log"
    [ "$status" -eq 0 ] || failed+=("$name($status)")
}

step env 30 bash -c "nvidia-smi; $python -c 'import torch, triton, sys; print(sys.version.split()[0], \
\"torch\", torch.__version__, \"triton\", triton.__version__, \"cuda\", torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else \"\")'; nproc; free -g | head -2"
if ! $python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device: nothing to measure"
    exit 1
fi

step tests 120 "$python" -m pytest -q -rs -p no:cacheprovider tests/test_ops.py tests/test_models.py \
    tests/test_ops_triton.py tests/test_cuda_cli.py
step kernel 80 "$python" benchmarks/bench_sifa_kernel.py --repeats 30
step model 50 "$python" benchmarks/bench_model.py --device cuda
step peers 90 "$python" benchmarks/bench_peers.py --device cuda --precision bf16 --batch-size 8 --rounds 20
step train 90 "$python" benchmarks/bench_train.py --model sifa_resnet50 --sizes 224 --device cuda --precision bf16 \
    --kernels reference auto --scan-videos 0
step predict 80 bash -c "$python benchmarks/bench_predict.py --model sifa_resnet50 --device cuda --batch-size 16 \
--videos 64 --rounds 2 && $python benchmarks/bench_predict.py --weights default --device cuda --batch-size 16 \
--videos 64 --rounds 2"

if [ ${#failed[@]} -gt 0 ]; then
    echo "steps that failed or ran out of time: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
