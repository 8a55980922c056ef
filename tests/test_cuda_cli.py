"""The three commands on a CUDA GPU, as real subprocesses: `predict` in fp32 and bf16 agrees with the
CPU, `finetune` trains and its checkpoint predicts on the GPU, `visualize` writes its video.

Skipped where torch sees no CUDA device (CI has none); `benchmarks/gpu_session.sh` runs them on a
lent GPU machine together with the GPU benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch

from cli_run import run_sifa
from conftest import write_motion_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = ["--model", "sifa_resnet_tiny", "--frames", "8", "--size", "64", "--workers", "2"]
# Largest difference allowed between a label's CPU fp32 score and the GPU's. cuDNN may use TF32
# for fp32 convolutions, so fp32 on the GPU is not bit-for-bit the CPU's either.
SCORE_TOLERANCE = {"fp32": 0.01, "bf16": 0.05}


def _scores(path: Path) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {"/".join(Path(r["path"]).parts[-2:]): {t["label"]: t["score"] for t in r["top"]} for r in rows}


def test_predict_on_cuda_agrees_with_the_cpu(tmp_path):
    clips = write_motion_dataset(tmp_path / "clips", per_class=2, num_frames=40, size=160)
    scores = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
        out = tmp_path / f"{device}-{precision}.jsonl"
        result = run_sifa("predict", clips, "--device", device, "--precision", precision, "-o", out, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        scores[device, precision] = _scores(out)
    reference = scores["cpu", "fp32"]
    assert len(reference) == 4
    for precision in ("fp32", "bf16"):
        on_gpu = scores["cuda", precision]
        assert on_gpu.keys() == reference.keys()
        for name, labels in reference.items():
            shared = labels.keys() & on_gpu[name].keys()
            assert shared, (name, labels, on_gpu[name])
            worst = max(abs(labels[label] - on_gpu[name][label]) for label in shared)
            assert worst <= SCORE_TOLERANCE[precision], (precision, name, labels, on_gpu[name])


def test_finetune_on_cuda_then_predict_with_its_checkpoint(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=8, num_frames=12)
    run = tmp_path / "run"
    result = run_sifa("finetune", data, *TINY, "--epochs", "2", "--batch-size", "4", "--device", "cuda",
                      "--out", run, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 < h["train_nll"] < 10 and 0 < h["val_loss"] < 10 for h in history)

    out = tmp_path / "predictions.jsonl"
    predicted = run_sifa("predict", data, "--weights", run / "best.safetensors", "--device", "cuda", "-o", out,
                         timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 16 and all(r["top"][0]["label"] in ("left", "right") for r in rows)


def test_visualize_on_cuda_writes_a_playable_video(tmp_path):
    clips = write_motion_dataset(tmp_path / "clips", per_class=1, num_frames=40, size=160, directions=("left",))
    out = tmp_path / "overlay.mp4"
    result = run_sifa("visualize", clips / "left" / "000.mp4", "--offsets", "--attention", "--device", "cuda",
                      "-o", out, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames > 0
