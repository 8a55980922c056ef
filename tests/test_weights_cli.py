"""`sifa weights ...` through Typer's CliRunner and as a real subprocess, against a local HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from sifa_cli.cli import weights as weights_cmd
from sifa_cli.models import create_model
from sifa_cli.weights.cache import cache_path
from sifa_cli.weights.checkpoint import save_checkpoint
from sifa_cli.weights.manifest import load_registry
from weights_http import FileServer, write_manifest

CATEGORIES = ["clap", "wave"]


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    weights_cmd.register(app)
    return app


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("sifa_resnet_tiny", num_classes=len(CATEGORIES), clip_length=16)
    path = tmp_path_factory.mktemp("ckpt") / "team.safetensors"
    save_checkpoint(path, model, {"arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": 16},
                                  "categories": CATEGORIES, "source": "test", "license": "CC0"})
    return path.read_bytes()


@pytest.fixture
def team(tmp_path, monkeypatch, checkpoint_bytes):
    """A team weights server (real HTTP on 127.0.0.1) and its manifest, named by $SIFA_MANIFEST."""
    server = FileServer().start()
    server.files["team.safetensors"] = checkpoint_bytes
    entry = {
        "arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": 16}, "categories": CATEGORIES,
        "file_name": "team.safetensors", "urls": [server.url("files", "team.safetensors")],
        "sha256": hashlib.sha256(checkpoint_bytes).hexdigest(), "size": len(checkpoint_bytes),
        "source": "our lab", "license": "CC0", "made": "a test", "input": {"frames": 16},
    }
    manifest = write_manifest(tmp_path / "team.json", {"team_tiny": entry})
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIFA_MANIFEST", str(manifest))
    monkeypatch.delenv("SIFA_OFFLINE", raising=False)
    yield server, manifest
    server.stop()


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_list_shows_shipped_and_team_entries(app, runner, team):
    result = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("resnet50_in1k_tv", "swin_b_in22k", "team_tiny"):
        assert name in result.stdout
    team_row = next(line for line in result.stdout.splitlines() if "team_tiny" in line)
    assert "no" in team_row and "sha256" in team_row


def test_download_verify_info_rm_cycle(app, runner, team):
    server, _ = team
    result = runner.invoke(app, ["weights", "download", "team_tiny"])
    assert result.exit_code == 0, result.output
    path = cache_path(load_registry().get("team_tiny"))
    assert path.is_file() and f"ok team_tiny: {path}" in result.stdout.replace("\n", "")

    listed = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "200"})
    assert "cached" in next(line for line in listed.stdout.splitlines() if "team_tiny" in line)

    verified = runner.invoke(app, ["weights", "verify", "team_tiny"], env={"COLUMNS": "300"})
    assert verified.exit_code == 0 and "manifest check: full sha256" in verified.stdout

    info = runner.invoke(app, ["weights", "info", "team_tiny"], env={"COLUMNS": "200"})
    assert info.exit_code == 0 and "our lab" in info.stdout and "2: clap, wave" in info.stdout
    file_info = runner.invoke(app, ["weights", "info", str(path)], env={"COLUMNS": "200"})
    assert file_info.exit_code == 0 and "sifa checkpoint" in file_info.stdout and "sifa_resnet_tiny" in file_info.stdout

    removed = runner.invoke(app, ["weights", "rm", "team_tiny"])
    assert removed.exit_code == 0 and not path.exists() and "removed team_tiny" in removed.stdout
    again = runner.invoke(app, ["weights", "verify", "team_tiny"])
    assert again.exit_code == 1
    assert "not downloaded; run `sifa weights download team_tiny`" in one_error_line(again)
    assert len(server.get_requests("/files/team.safetensors")) == 1
    shipped = runner.invoke(app, ["weights", "rm", load_registry().default_entry().name], env={"COLUMNS": "300"})
    assert shipped.exit_code == 0 and "comes with its manifest and is never deleted" in shipped.stdout
    assert load_registry().default_entry().local_path.is_file()


def test_verify_removes_a_corrupted_cached_file(app, runner, team):
    assert runner.invoke(app, ["weights", "download", "team_tiny"]).exit_code == 0
    path = cache_path(load_registry().get("team_tiny"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = runner.invoke(app, ["weights", "verify", "team_tiny"])
    assert result.exit_code == 1 and "bad file was removed" in one_error_line(result)
    assert not path.exists()


def test_user_errors_are_one_line(app, runner, team, tmp_path):
    unknown = runner.invoke(app, ["weights", "info", "team_tiyn"])
    assert unknown.exit_code == 1 and "did you mean team_tiny" in one_error_line(unknown)
    offline = runner.invoke(app, ["weights", "download", "team_tiny"], env={"SIFA_OFFLINE": "1"})
    assert offline.exit_code == 1 and "offline mode" in one_error_line(offline)
    bad_manifest = tmp_path / "bad.json"
    bad_manifest.write_text(json.dumps({"format": "sifa-manifest/1", "weights": {"x": {"arch": "a"}}}))
    broken = runner.invoke(app, ["weights", "list", "--manifest", str(bad_manifest)])
    assert broken.exit_code == 1 and "entry 'x': missing field file_name" in one_error_line(broken)


def test_import_writes_a_self_contained_checkpoint(app, runner, team, tmp_path):
    model = create_model("sifa_resnet_tiny", num_classes=3, clip_length=16)
    src = tmp_path / "ref.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, src)
    labels = tmp_path / "labels.txt"
    labels.write_text("x\ny\nz\n")
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["weights", "import", str(src), "--arch", "sifa_resnet_tiny",
                                 "--labels", str(labels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "sifa_resnet_tiny, 3 classes, 16 frames per clip" in result.stdout
    info = runner.invoke(app, ["weights", "info", str(out)], env={"COLUMNS": "200"})
    assert "3: x, y, z" in info.stdout

    again = runner.invoke(app, ["weights", "import", str(src), "--arch", "sifa_resnet_tiny", "--out", str(out)])
    assert again.exit_code == 2 and "already exists; add --overwrite" in one_error_line(again)
    wrong = runner.invoke(app, ["weights", "import", str(src), "--arch", "sifa_swin_nano", "--out", str(out),
                                "--overwrite"])
    assert wrong.exit_code == 1 and "looks like a sifa_resnet_tiny checkpoint" in one_error_line(wrong)
    assert "3: x, y, z" in runner.invoke(app, ["weights", "info", str(out)], env={"COLUMNS": "200"}).stdout
    twice = runner.invoke(app, ["weights", "import", str(out), "--arch", "sifa_resnet_tiny", "--out",
                                str(tmp_path / "again.safetensors")])
    assert twice.exit_code == 2 and "is already a safetensors checkpoint, not a reference .pth" in one_error_line(twice)


def test_real_subprocess_download_with_progress(team, tmp_path):
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "sifa_cli.cli.main", "weights", "download", "team_tiny"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ok team_tiny" in result.stdout
    assert "team.safetensors" in result.stderr  # the progress bar's label
    assert cache_path(load_registry().get("team_tiny")).is_file()


def test_imported_reference_checkpoint_predicts_through_the_cli(tmp_path, make_video, monkeypatch):
    """Reference layout in (module. prefix, state_dict wrapper), `sifa predict` out, as real processes."""
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    torch.manual_seed(4)
    reference = create_model("sifa_resnet_tiny", num_classes=4, clip_length=16)
    with torch.no_grad():  # both heads strongly favour class index 2, whatever the video shows
        for head in (reference.fc, reference.fc_dual):
            head.bias.copy_(torch.tensor([0.0, 0.0, 8.0, 0.0]))
    src = tmp_path / "sifa_reference.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 64}, src)
    labels = tmp_path / "labels.txt"
    labels.write_text("archery\nbowling\ncartwheel\ndiving\n")
    out = tmp_path / "imported.safetensors"
    sifa = [sys.executable, "-m", "sifa_cli.cli.main"]

    imported = subprocess.run(sifa + ["weights", "import", str(src), "--arch", "sifa_resnet_tiny",
                                      "--labels", str(labels), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr

    video = make_video("clip.mp4", num_frames=24, width=64, height=64)
    predicted = subprocess.run(sifa + ["predict", str(video), "--weights", str(out), "--device", "cpu",
                                       "--format", "json"],
                               capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    [record] = json.loads(predicted.stdout)
    top = record["top"]
    assert top[0]["label"] == "cartwheel" and top[0]["score"] > 0.9
    assert {entry["label"] for entry in top} <= {"archery", "bowling", "cartwheel", "diving"}


def test_a_sifa_home_that_is_a_file_is_named(app, runner, tmp_path):
    home = tmp_path / "cache"
    home.write_text("not a folder")
    result = runner.invoke(app, ["weights", "list"], env={"SIFA_HOME": str(home), "COLUMNS": "200"})
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: $SIFA_HOME is {home}, which is not a folder; point it at a folder for sifa's cache"
