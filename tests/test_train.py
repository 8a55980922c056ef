"""`sifa finetune` end to end on generated motion videos (label = direction of motion), run as real
subprocesses: learning, predict agreeing with the run's checkpoint, exact resume after SIGKILL,
two-process data-parallel training under torchrun, and the pieces (schedule, config, init)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from conftest import moving_square_frames, write_motion_dataset, write_video
from sifa_cli.cli import finetune as finetune_cmd
from sifa_cli.data.dataset import ClipDataset, find_labelled_videos, scan_videos
from sifa_cli.data.spec import InputSpec
from sifa_cli.engine.optimization import get_lr
from sifa_cli.engine.run_folder import STATE_FORMAT, load_training_state
from sifa_cli.engine.starting_model import build_starting_model
from sifa_cli.engine.train import Trainer
from sifa_cli.engine.train_config import TrainConfig, build_config, read_config_file, resumed_config
from sifa_cli.engine.train_metrics import is_better
from sifa_cli.errors import InputError
from sifa_cli.models import create_model, predict_proba
from sifa_cli.weights.checkpoint import load_checkpoint, load_model, save_checkpoint

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
TINY = ["--model", "sifa_resnet_tiny", "--frames", "8", "--size", "64", "--workers", "0"]
# Fields of metrics.jsonl that measure wall-clock time and so differ between identical runs.
TIMING_FIELDS = ("train_clips_per_s", "epoch_seconds", "data_wait_seconds", "first_batch_seconds", "val_seconds")


def _env() -> dict:
    # One thread per process keeps the 2-process runs from fighting over the cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


def finetune(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*SIFA, "finetune", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _metrics_without_timing(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_motion_direction_skips_bad_videos_and_predict_agrees(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=20, num_frames=12)
    (data / "left" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    write_video(data / "right" / "short.mp4", moving_square_frames("right", np.random.default_rng(5), 4))
    run = tmp_path / "run"
    # Light augmentation and many small steps: this learns on every seed tried (23-24 of 24 held out).
    result = finetune(data, *TINY, "--epochs", "6", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.004",
                      "--warmup-epochs", "0.5", "--min-crop-area", "0.7", "--color-jitter", "0.1", "--out", run)
    assert result.returncode == 0, result.stderr

    report = (run / "scan_report.csv").read_text()
    assert "corrupt.mp4" in report and "short.mp4" not in report  # a short clip is used, its frames spread
    assert "1 videos skipped" in result.stderr
    assert "1 of 41 videos are shorter than a clip: each of their clips spreads its 8 frames evenly" in result.stderr
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "config.yaml", "dataset.json"):
        assert (run / name).is_file(), name
    for name in ("curves.png", "confusion_matrix.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run.glob(".*tmp*"))
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert set(history[0]["val_per_class"]) == {"left", "right"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == "sifa_resnet_tiny" and config["lr"] == 0.004 and config["hflip"] is False
    assert "best validation top-1" in result.stdout
    # Comparable losses: train and validation both -log p(true class); the objective apart; no top-5 of 2 classes.
    # (What they are is in the README, not a paragraph at the start of every run.)
    assert "loss: mean -log p(true class)" not in result.stderr
    assert all(h["train_nll"] > 0 and h["train_loss"] > 0 and h["val_top5"] is None for h in history)
    assert "top-5" not in result.stderr + result.stdout
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ") and "/6:" in line]
    assert len(epoch_lines) == 6 and all("objective" in line and "waiting for data" in line for line in epoch_lines)
    assert f"train loss {history[-1]['train_nll']:.4f}" in epoch_lines[-1]
    # The summary does not repeat every epoch: the best and the last only.
    summary_rows = [line for line in result.stdout.splitlines() if line.startswith(("│ best", "│ last"))]
    assert 1 <= len(summary_rows) <= 2 and summary_rows[0].startswith("│ best")

    state, meta = load_checkpoint(run / "best.safetensors")
    assert meta["arch"] == "sifa_resnet_tiny" and meta["categories"] == ["left", "right"]
    assert meta["input"]["frames"] == 8 and meta["input"]["size"] == 64
    assert meta["arch_kwargs"] == {"clip_length": 8}
    assert meta["training"]["config"]["optimizer"] == "adamw"
    best_epoch = min(history, key=lambda h: (h["val_loss"], -h["val_top1"]))["epoch"]  # the lowest validation loss
    assert meta["metrics"]["epoch"] == best_epoch

    # Held-out clips the run never saw (another seed), through `sifa predict` with the run's checkpoint.
    held_out = write_motion_dataset(tmp_path / "held_out", per_class=12, num_frames=12, seed=1234)
    predictions_file = tmp_path / "predictions.jsonl"
    predicted = subprocess.run([*SIFA, "predict", str(held_out), "--weights", str(run / "best.safetensors"),
                                "--output", str(predictions_file), "--device", "cpu"],
                               capture_output=True, text=True, timeout=240, env=_env())
    assert predicted.returncode == 0, predicted.stderr
    predictions = {Path(r["path"]).resolve(): r["top"] for r in map(json.loads, predictions_file.read_text().splitlines())}
    assert len(predictions) == 24
    correct = sum(top[0]["label"] == path.parent.name for path, top in predictions.items())
    assert correct >= 18, f"{correct}/24 held-out clips right (chance: 12)"

    # The engine's own evaluation path (what validation scores) gives the same answers as predict.
    model, _ = load_model(run / "best.safetensors")
    samples, _ = scan_videos(find_labelled_videos(held_out), min_frames=8)
    clips = ClipDataset(samples, meta["categories"], InputSpec.from_meta(meta["input"]))
    batch = torch.stack([clips[i][0] for i in range(len(clips))])
    with torch.no_grad():
        probabilities = predict_proba(model, batch)
    for sample, row in zip(samples, probabilities):
        top = predictions[Path(sample.path).resolve()]
        assert meta["categories"][int(row.argmax())] == top[0]["label"]
        assert float(row.max()) == pytest.approx(top[0]["score"], abs=1e-4)


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=8, num_frames=12)
    common = [data, *TINY, "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25", "--log-every", "1"]
    uninterrupted = finetune(*common, "--out", tmp_path / "whole")
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    killed_run = tmp_path / "killed"
    process = subprocess.Popen([*SIFA, "finetune", *map(str, common), "--out", str(killed_run)],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("epoch 2/2 batch 1/"):
            process.send_signal(signal.SIGKILL)  # mid-epoch, without any chance to clean up
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    # What the killed run left is whole and consistent: epoch 1 done, epoch 2 lost.
    assert load_training_state(killed_run / "train_state.pt")["epoch"] == 1
    for name in ("best.safetensors", "last.safetensors"):
        assert load_checkpoint(killed_run / name)[1]["training"]["epoch"] == 1
    assert len((killed_run / "metrics.jsonl").read_text().splitlines()) == 1

    resumed = finetune("--resume", killed_run)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "after epoch 1" in resumed.stderr
    whole, _ = load_checkpoint(tmp_path / "whole" / "last.safetensors")
    continued, meta = load_checkpoint(killed_run / "last.safetensors")
    assert meta["training"]["epoch"] == 2
    assert whole.keys() == continued.keys()
    assert all(torch.equal(whole[k], continued[k]) for k in whole), "resumed weights differ from the uninterrupted run"
    assert _metrics_without_timing(killed_run / "metrics.jsonl") == _metrics_without_timing(tmp_path / "whole" / "metrics.jsonl")
    state = load_training_state(killed_run / "train_state.pt")
    assert state["format"] == STATE_FORMAT and state["step"] == 2 * 3  # 12 clips / 4 per batch, 2 epochs

    finished = finetune("--resume", killed_run)
    assert finished.returncode == 0 and "already finished" in finished.stderr
    longer = finetune("--resume", killed_run, "--epochs", "3", "--log-every", "100")
    assert longer.returncode == 0, longer.stderr
    assert len((killed_run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_two_process_torchrun_on_cpu_with_gloo(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=6, num_frames=12)
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sifa_cli.cli.main", "finetune", str(data), *TINY, "--epochs", "2", "--batch-size", "2",
               "--val-fraction", "0.34", "--out", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data-parallel training on 2 processes (cpu)" in result.stderr
    assert result.stdout.count("best validation top-1") == 1  # only rank 0 reports
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2
    # 4 validation clips, 2 per process: the counts were summed across processes.
    assert all(h["val_clips"] == 4 for h in history)
    state = load_training_state(run / "train_state.pt")
    assert state["step"] == 2 * 2  # 8 training clips / 2 processes / 2 per batch, 2 epochs
    assert sum(map(sum, state["best"]["confusion"])) == 4
    model, meta = load_model(run / "best.safetensors")
    assert meta["training"]["processes"] == 2
    assert not any(k.startswith("module.") for k in model.state_dict())


# ---------------------------------------------------------------------------------------------


def test_best_epoch_is_the_lowest_validation_loss():
    best = {"val_loss": 0.80, "val_top1": 0.75}
    assert is_better({"val_loss": 0.90, "val_top1": 0.70}, {})  # the first epoch is the best so far
    # A higher top-1 with a higher loss is not better (small validation sets make top-1 jumpy).
    assert not is_better({"val_loss": 0.85, "val_top1": 0.80}, best)
    assert is_better({"val_loss": 0.70, "val_top1": 0.70}, best)
    assert is_better({"val_loss": 0.80, "val_top1": 0.78}, best)  # equal loss: the better top-1
    assert not is_better({"val_loss": 0.80, "val_top1": 0.75}, best)
    assert not is_better({"val_loss": 0.79, "val_top1": 0.90}, best, min_delta=0.05)
    assert is_better({"val_loss": 0.70, "val_top1": 0.60}, best, min_delta=0.05)


def test_lr_schedule_warms_up_then_follows_a_cosine():
    lrs = [get_lr(s, base_lr=0.1, total_steps=100, warmup_steps=10, min_lr=0.001) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.001 + 0.5 * 0.099)
    assert get_lr(100, base_lr=0.1, total_steps=100, warmup_steps=10, min_lr=0.001) == pytest.approx(0.001)
    assert get_lr(0, base_lr=0.1, total_steps=5) == pytest.approx(0.1)


def test_config_file_and_command_line_precedence(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 7\nbatch-size: 3\noptimizer: adamw\nhflip: true\nlr: 1\n")
    config = build_config({"epochs": 2, "lr": None}, yaml_file)
    assert (config.epochs, config.batch_size, config.optimizer, config.hflip, config.lr) == (2, 3, "adamw", True, 1.0)
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('model = "sifa_resnet_tiny"\nlabel_smoothing = 0.2\n')
    assert read_config_file(toml_file) == {"model": "sifa_resnet_tiny", "label_smoothing": 0.2}
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    with pytest.raises(InputError, match="unknown option.*epoch"):
        build_config({}, tmp_path / "typo.yaml")
    (tmp_path / "type.yaml").write_text("epochs: ten\n")
    with pytest.raises(InputError, match="'epochs' must be a int"):
        build_config({}, tmp_path / "type.yaml")
    with pytest.raises(InputError, match="size must be a multiple of 32"):
        build_config({"size": 100})
    recorded = tmp_path / "config.yaml"
    recorded.write_text(yaml.safe_dump(TrainConfig(epochs=3, lr=0.1).to_dict()))
    assert resumed_config(recorded, {"epochs": 5, "lr": 0.1}).epochs == 5
    with pytest.raises(InputError, match="cannot change 'batch_size'"):
        resumed_config(recorded, {"batch_size": 2})


def test_starting_from_a_checkpoint_keeps_or_resets_the_classifier(tmp_path):
    torch.manual_seed(0)
    source = create_model("sifa_resnet_tiny", num_classes=2, clip_length=8)
    path = save_checkpoint(tmp_path / "start.safetensors", source, {
        "arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": 8}, "categories": ["left", "right"],
        "input": {"frames": 8, "size": 64, "resize": 72}})
    spec = InputSpec(frames=8, size=64, resize=72)
    messages: list[str] = []
    same = build_starting_model(TrainConfig(model="sifa_resnet_tiny", init=str(path)), ["left", "right"], spec,
                                messages.append)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.model.state_dict().items())
    assert "classifier is kept" in messages[-1]
    other = build_starting_model(TrainConfig(model="sifa_resnet_tiny", init=str(path)), ["a", "b", "c"], spec,
                                 messages.append)
    assert other.model.fc.out_features == 3 and other.model.fc_dual.out_features == 3
    assert "starts afresh" in messages[-1]
    kept = {k: v for k, v in other.model.state_dict().items() if not k.startswith(("fc.", "fc_dual."))}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in kept.items())
    with pytest.raises(InputError, match="not --model sifa_resnet_small"):
        build_starting_model(TrainConfig(model="sifa_resnet_small", init=str(path)), ["a", "b"], spec, messages.append)


def test_freeze_backbone_trains_only_the_classifier(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=10, size=64)
    config = build_config(dict(data=str(data), out=str(tmp_path / "run"), model="sifa_resnet_tiny", frames=8, size=64,
                               workers=0, epochs=1, batch_size=4, freeze_backbone=True, seed=1))
    torch.manual_seed(config.seed)
    before = create_model("sifa_resnet_tiny", num_classes=2, clip_length=8).state_dict()
    Trainer(config, log=lambda message: None).fit()
    after, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")
    for key, value in before.items():
        if key.startswith(("fc.", "fc_dual.")):
            assert not torch.equal(after[key], value), key
        else:  # weights and normalisation statistics alike
            assert torch.equal(after[key], value), key


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    finetune_cmd.register(app)
    app.command("other")(lambda: None)  # a second command keeps `finetune` a subcommand
    return app


def test_bad_input_gives_one_line_errors(tmp_path, cli):
    runner = CliRunner()
    data = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=10, size=32)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    cases = [
        (["finetune", str(tmp_path / "missing"), "--out", str(tmp_path / "r1")], "dataset not found"),
        # (without --out a run goes to runs/<data folder name>: tests/test_short_clips.py)
        (["finetune", str(data), "--out", str(tmp_path / "full")], "not empty"),
        (["finetune", "--resume", str(tmp_path / "full")], "not a sifa run folder"),
        (["finetune", str(data), "--out", str(tmp_path / "r2"), "--precision", "fp16", "--device", "cpu",
          *TINY[:4]], "fp16"),
        (["finetune", str(data), "--out", str(tmp_path / "r3"), "--model", "nonexistent"], "unknown model"),
        (["finetune", str(data), "--out", str(tmp_path / "r4"), "--config", str(tmp_path / "none.yaml")],
         "config file not found"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# Robustness of resume, interrupts and option checks (the finetune robustness sweep)

SMALL = ["--model", "sifa_resnet_tiny", "--frames", "8", "--size", "32", "--workers", "0", "--batch-size", "2"]


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_resume_without_training_state_refuses_once_an_epoch_finished(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=32)
    run = tmp_path / "run"
    first = finetune(data, *SMALL, "--epochs", "2", "--out", run)
    assert first.returncode == 0, first.stderr
    (run / "train_state.pt").unlink()  # e.g. deleted to save space
    kept = {name: (run / name).read_bytes() for name in ("best.safetensors", "last.safetensors", "metrics.jsonl")}
    resumed = finetune("--resume", run, "--epochs", "3")
    assert resumed.returncode == 2, resumed.stderr
    line = _one_error(resumed)
    assert "train_state.pt is missing, so training cannot continue exactly" in line
    assert "metrics.jsonl records 2 finished epochs" in line
    assert f"--init {run / 'best.safetensors'} --out NEW_RUN" in line and str(data) in line
    assert {name: (run / name).read_bytes() for name in kept} == kept  # nothing of the finished epochs lost
    assert not (run / "train_state.pt").exists()
    (run / "metrics.jsonl").unlink()  # the checkpoints alone still show finished epochs
    assert "it holds best.safetensors and last.safetensors" in _one_error(finetune("--resume", run))

    # Still fine: a run killed during its first epoch (no metrics, no checkpoints) starts that epoch again.
    killed = tmp_path / "killed"
    process = subprocess.Popen([*SIFA, "finetune", str(data), *SMALL, "--epochs", "1", "--log-every", "1",
                                "--out", str(killed)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env=_env())
    for line in process.stderr:
        if line.startswith("epoch 1/1 batch 1/"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert not (killed / "train_state.pt").exists() and (killed / "config.yaml").is_file()
    again = finetune("--resume", killed)
    assert again.returncode == 0, again.stderr
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_resume_refuses_when_videos_of_the_split_are_gone_or_broken(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=32)
    run = tmp_path / "run"
    first = finetune(data, *SMALL, "--epochs", "1", "--out", run)
    assert first.returncode == 0, first.stderr
    split = json.loads((run / "dataset.json").read_text())
    kept = {name: (run / name).read_bytes() for name in ("train_state.pt", "metrics.jsonl", "best.safetensors")}

    # A validation video that no longer decodes is not swapped for another one (here read by a loader
    # worker process, whose error still comes back as one line).
    val_video = Path(split["val"][0][0])
    original = val_video.read_bytes()
    val_video.write_bytes(original[:300])
    broken = finetune("--resume", run, "--epochs", "2", "--workers", "1")
    assert broken.returncode != 0, broken.stderr
    line = _one_error(broken)
    assert "a validation video can no longer be read" in line and str(val_video) in line
    assert {name: (run / name).read_bytes() for name in kept} == kept
    val_video.write_bytes(original)

    # A whole class deleted: refused before anything is trained or written.
    gone = sorted((data / "right").glob("*.mp4"))
    for video in gone:
        video.unlink()
    missing = finetune("--resume", run, "--epochs", "2")
    assert missing.returncode == 2, missing.stderr
    line = _one_error(missing)
    assert "3 of the 6 videos of this run's split (dataset.json; 1 of them for validation) are missing" in line
    assert str(data / "right") in line and "class 'right' has no video left" in line
    assert "using the next one instead" not in missing.stderr
    assert {name: (run / name).read_bytes() for name in kept} == kept


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_finished_leaves_nothing_that_blocks_a_retry(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=32)
    run = tmp_path / "run"
    command = [*SIFA, "finetune", str(data), *SMALL, "--epochs", "1", "--log-every", "1", "--out", str(run)]
    # SIGINT left at its default in the child, so Python turns it into KeyboardInterrupt even when
    # the tests themselves run in the background (where a shell ignores SIGINT).
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("epoch 1/1 batch 1/"):  # the run folder holds config.yaml, dataset.json, ...
            assert (run / "config.yaml").is_file()
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not run.exists()
    retry = finetune(data, *SMALL, "--epochs", "1", "--out", run)
    assert retry.returncode == 0, retry.stderr
    assert (run / "best.safetensors").is_file()


def test_bad_seed_and_option_values_name_the_option(tmp_path):
    data = tmp_path / "data"  # never read: the options are checked first
    data.mkdir()
    for args, expected in [
        (["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--val-fraction", "1.5", "--batch-size", "0"],
         "--batch-size must be at least 1, got 0; --val-fraction must be between 0 and 1, got 1.5"),
    ]:
        result = finetune(data, "--out", tmp_path / "run", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in _one_error(result), args
        assert not (tmp_path / "run").exists()
    # From a config file the message names the file's key.
    with pytest.raises(InputError, match=r"^val_fraction must be between 0 and 1, got 1.5$"):
        build_config({"seed": 3}, _write(tmp_path / "c.yaml", "val_fraction: 1.5\n"))
    with pytest.raises(InputError, match="--min-delta must be a finite number, got nan"):
        build_config({"min_delta": float("nan")})


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_offset_lr_scale_moves_the_offset_convolutions_that_many_times_faster(tmp_path):
    from sifa_cli.engine.optimization import make_optimizer

    model = create_model("sifa_motion_tiny", num_classes=3)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("offset_lr_scale: 5\n")
    config = build_config({}, config_file)
    assert config.offset_lr_scale == 5
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, config, lr=0.01, weight_decay=0.0)
    assert sorted(g["lr_scale"] for g in optimizer.param_groups) == [1.0, 1.0, 5.0]  # conv_offset has no bias
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # AdamW's first step moves every weight by its group's lr
    moved = {n: float((p.detach() - before[n]).abs().mean()) for n, p in model.named_parameters()}
    assert moved["layer2.1.conv_offset.weight"] == pytest.approx(0.05, rel=1e-3)
    assert moved["layer2.1.conv1.weight"] == pytest.approx(0.01, rel=1e-3)
    # scale 1: the two groups of before (decay, no decay), so older training states still resume
    assert len(make_optimizer(model, TrainConfig(), lr=0.01, weight_decay=0.0).param_groups) == 2
    with pytest.raises(InputError, match="offset.lr.scale must be positive"):
        build_config({"offset_lr_scale": 0})


def test_a_run_with_the_displacement_loss_trains_and_records_it(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=64)
    config_file = _write(tmp_path / "c.yaml", "displacement_loss: 0.5\ntranslation_classes: left, right\n")
    config = build_config(dict(data=str(data), out=str(tmp_path / "run"), model="sifa_motion_tiny", frames=8,
                               size=64, workers=0, epochs=1, batch_size=3, seed=2), config_file)
    assert (config.displacement_loss, config.translation_classes) == (0.5, "left, right")
    torch.manual_seed(config.seed)
    before = create_model("sifa_motion_tiny", num_classes=2, clip_length=8).state_dict()
    Trainer(config, log=lambda message: None).fit()
    after, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["training"]["config"]["displacement_loss"] == 0.5
    assert not torch.equal(after["layer2.1.conv_offset.weight"], before["layer2.1.conv_offset.weight"])


def test_displacement_loss_settings_are_checked(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=10, size=32)
    with pytest.raises(InputError, match="translation_classes must name the classes"):
        build_config({}, _write(tmp_path / "a.yaml", "displacement_loss: 1\n"))
    with pytest.raises(InputError, match="displacement_loss must not be negative"):
        build_config({}, _write(tmp_path / "b.yaml", "displacement_loss: -1\ntranslation_classes: left\n"))
    config = build_config(dict(data=str(data), out=str(tmp_path / "run"), model="sifa_motion_tiny", frames=8,
                               size=32, workers=0, epochs=1, batch_size=2),
                          _write(tmp_path / "c.yaml", "displacement_loss: 1\ntranslation_classes: left, up\n"))
    with pytest.raises(InputError, match=r"translation_classes names 'up', not a class of the data \(left, right\)"):
        Trainer(config, log=lambda message: None).fit()


def test_a_run_with_mirrored_and_reversed_clips_records_the_swaps_and_checks_them(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=10, size=32)
    settings = dict(data=str(data), out=str(tmp_path / "run"), model="sifa_motion_tiny", frames=8, size=32,
                    workers=0, epochs=1, batch_size=2)
    config = build_config(settings, _write(tmp_path / "c.yaml", "hflip: true\nhflip_swaps: left=right\n"
                                           "reverse: true\nreverse_swaps: left = right\n"))
    Trainer(config, log=lambda message: None).fit()
    _, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    recorded = meta["training"]["config"]
    assert (recorded["reverse"], recorded["hflip_swaps"], recorded["reverse_swaps"]) == (True, "left=right",
                                                                                         "left = right")
    with pytest.raises(InputError, match="reverse_swaps swaps classes of clips played backwards, so it needs reverse"):
        build_config({}, _write(tmp_path / "a.yaml", "reverse_swaps: left=right\n"))
    with pytest.raises(InputError, match="hflip_swaps swaps classes of mirrored clips, so it needs hflip"):
        build_config({}, _write(tmp_path / "b.yaml", "hflip_swaps: left=right\n"))
    with pytest.raises(InputError, match="hflip_swaps: expected pairs of two different classes like 'pan left=pan "
                                         "right', got 'left'"):
        build_config({}, _write(tmp_path / "e.yaml", "hflip: true\nhflip_swaps: left\n"))
    settings["out"] = str(tmp_path / "run2")
    config = build_config(settings, _write(tmp_path / "d.yaml", "reverse: true\nreverse_swaps: left=up\n"))
    with pytest.raises(InputError, match=r"reverse_swaps names 'up', not a class of the data \(left, right\)"):
        Trainer(config, log=lambda message: None).fit()


def test_the_init_checkpoints_motion_block_is_kept_unless_sifa_is_off(tmp_path):
    """`sifa visualize` shows a checkpoint's `motion_block` by default; a model fine-tuned from a motion
    model keeps it (same blocks, same start), one trained with --no-sifa does not."""
    data = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=10, size=32)
    torch.manual_seed(0)
    meta = {"arch": "sifa_motion_tiny", "categories": ["a", "b", "c"], "arch_kwargs": {"clip_length": 8},
            "input": {"frames": 8, "step": 1, "size": 32, "resize": 32}, "motion_block": "layer3.1"}
    init = save_checkpoint(tmp_path / "init.safetensors", create_model("sifa_motion_tiny", num_classes=3,
                                                                       clip_length=8), meta)
    for sifa, expected in ((True, "layer3.1"), (False, None)):
        out = tmp_path / f"run_{sifa}"
        config = build_config(dict(data=str(data), out=str(out), init=str(init), frames=8, size=32, workers=0,
                                   epochs=1, batch_size=2, seed=1, sifa=sifa))
        Trainer(config, log=lambda message: None).fit()
        _, saved = load_checkpoint(out / "last.safetensors")
        assert saved.get("motion_block") == expected
        assert load_training_state(out / "train_state.pt")["motion_block"] == expected  # for --resume
