"""`sifa export`: ONNX files run in onnxruntime and TorchScript files in torch.jit give PyTorch's outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from predict_helpers import CATEGORIES, INPUT_SPEC, colour_checkpoint
from sifa_cli.engine.export import example_clip, export_model, read_meta, run_onnx
from sifa_cli.errors import WeightsError
from sifa_cli.weights.checkpoint import load_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return colour_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def onnx_file(weights, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, meta = load_model(weights)
    out = tmp_path_factory.mktemp("onnx") / "colour.onnx"
    report = export_model(model, meta, "onnx", out)
    assert report.path == out and report.outputs == ("logits", "logits_dual")
    assert report.input_shape == (1, 3, INPUT_SPEC["frames"], INPUT_SPEC["size"], INPUT_SPEC["size"])
    return out


def plain_outputs(weights, clip):
    model, _ = load_model(weights)
    with torch.inference_mode():
        return model(clip)


def test_onnx_runs_in_onnxruntime_like_pytorch_for_any_batch(weights, onnx_file):
    _, meta = load_model(weights)
    for batch in (1, 3):
        clip = example_clip(meta, batch=batch, seed=10 + batch)
        got = run_onnx(onnx_file, clip)
        want = plain_outputs(weights, clip)
        assert len(got) == 2
        for a, b in zip(got, want):
            assert a.shape == b.shape == (batch, len(CATEGORIES))
            assert (a - b).abs().max().item() < 1e-4
    assert read_meta(onnx_file)["categories"] == CATEGORIES


def test_onnx_uses_only_standard_operators(onnx_file):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    ops = {node.op_type for node in model.graph.node}
    assert "GridSample" in ops and "Conv" in ops
    assert not ops & {"BatchNormalization", "ATen", "EmbeddingBag"}  # folded; no fallbacks


def test_torchscript_round_trip(weights, tmp_path):
    model, meta = load_model(weights)
    out = tmp_path / "colour.pt"
    report = export_model(model, meta, "torchscript", out)
    assert report.max_abs_diff < 1e-4 and out.stat().st_size == report.size_bytes
    loaded = torch.jit.load(str(out))
    clip = example_clip(meta, batch=2, seed=3)
    with torch.inference_mode():
        got = loaded(clip)
    for a, b in zip(got, plain_outputs(weights, clip)):
        assert (a - b).abs().max().item() < 1e-4
    assert read_meta(out)["input"]["frames"] == INPUT_SPEC["frames"]
    # Given where a checkpoint belongs, the export is named for what it is.
    with pytest.raises(WeightsError, match="is a TorchScript model .as `sifa export` writes., not a checkpoint"):
        load_model(out)


@pytest.fixture(scope="module")
def app():
    from sifa_cli.cli.main import _register, app

    _register()
    return app


def test_cli_export_onnx(app, weights, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(weights), "--format", "onnx", "--out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "max |diff| against PyTorch" in result.stdout
    assert out.exists() and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_a_motion_model_exports_to_onnx_quietly_and_matches_pytorch(tmp_path):
    """The default's design (frame-wise stem, SIFA motion readout) in ONNX, through the CLI: the file
    gives PyTorch's outputs, and the exporter's optimizer narrates nothing (it logged one warning
    per SIFA step's list it left unfolded: 72 lines for this tiny model, over 100 for the default)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sifa_cli.models import create_model
    from sifa_cli.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("sifa_motion_tiny", num_classes=2, clip_length=2).eval()
    meta = {"arch": "sifa_motion_tiny", "arch_kwargs": {"clip_length": 2}, "categories": ["a", "b"],
            "input": {"frames": 2, "step": 1, "size": 32, "resize": 32}}
    with torch.no_grad():
        weights = save_checkpoint(tmp_path / "motion.safetensors", model, meta)
    out = tmp_path / "motion.onnx"
    result = subprocess.run([sys.executable, "-m", "sifa_cli.cli.main", "export", str(weights), "--out", str(out)],
                            capture_output=True, text=True, timeout=400, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "outputs logits, logits_dual" in result.stdout
    assert result.stderr.strip() == "", result.stderr[:2000]
    clip = torch.randn(3, 3, 2, 32, 32)
    with torch.inference_mode():
        expected = model(clip)
    for got, want in zip(run_onnx(out, clip), expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_cli_export_torchscript_subprocess(weights, tmp_path):
    out = tmp_path / "model.pt"
    command = [sys.executable, "-m", "sifa_cli.cli.main", "export", str(weights), "--format", "torchscript",
               "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "torchscript" in result.stdout and out.exists()
    assert "Warning" not in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--format", "tflite"], "Invalid value for '--format'"),
    (["--out", "{tmp}"], "is a directory"),
    (["--out", "{tmp}/missing/model.onnx"], "does not exist"),
])
def test_cli_export_bad_options_give_one_line(app, weights, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["export", str(weights), *args])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_export_missing_weights(app, tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope.safetensors"), "--format", "torchscript",
                                      "--out", str(tmp_path / "x.pt")])
    assert result.exit_code != 0
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_predict_backend_onnxruntime_matches_torch_and_caches_the_export(app, weights, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from predict_helpers import write_colour_video

    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    folder = tmp_path / "videos"
    write_colour_video(folder / "red.mp4", ["red"] * 20)
    write_colour_video(folder / "blue.mp4", ["blue"] * 20)
    runs = {}
    for backend in ("torch", "onnxruntime", "onnxruntime"):
        result = CliRunner().invoke(app, ["predict", str(folder), "-w", str(weights), "--format", "json",
                                          "--backend", backend, "-k", "3"])
        assert result.exit_code == 0, result.output
        runs.setdefault(backend, []).append(result)
    first, second = runs["onnxruntime"]
    assert "exporting the model to ONNX once" in first.stderr
    assert "exporting" not in second.stderr  # the cached file is used
    assert len(list((tmp_path / "home" / "onnx").glob("*.onnx"))) == 1
    import json

    # A damaged cached file (here cut to nothing, as by a disk that filled up) is exported again, not a
    # traceback. (Once: every damage onnxruntime refuses takes the same path, and each export costs seconds.)
    cached = next((tmp_path / "home" / "onnx").glob("*.onnx"))
    cached.write_bytes(b"")
    again = CliRunner().invoke(app, ["predict", str(folder), "-w", str(weights), "--format", "json",
                                     "--backend", "onnxruntime", "-k", "3"])
    assert again.exit_code == 0 and "cannot be used" in again.stderr, again.output
    assert json.loads(again.stdout) == json.loads(second.stdout)

    def scores(result):
        return {Path(r["path"]).name: {t["label"]: t["score"] for t in r["top"]} for r in json.loads(result.stdout)}

    torch_scores, ort_scores = scores(runs["torch"][0]), scores(second)
    assert torch_scores.keys() == {"red.mp4", "blue.mp4"} == ort_scores.keys()
    for name in torch_scores:
        assert max(torch_scores[name], key=torch_scores[name].get) == max(ort_scores[name], key=ort_scores[name].get)
        for label, score in torch_scores[name].items():
            assert abs(ort_scores[name][label] - score) < 1e-4


def test_predict_backend_onnxruntime_refuses_gpu_and_half_precision(app, weights, tmp_path):
    from predict_helpers import write_colour_video

    video = write_colour_video(tmp_path / "red.mp4", ["red"] * 20)
    for extra in (["--device", "cuda"], ["--precision", "bf16"]):
        result = CliRunner().invoke(app, ["predict", str(video), "-w", str(weights), "--backend", "onnxruntime", *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            "error: --backend onnxruntime runs on the CPU in fp32: use --device cpu --precision fp32"]
