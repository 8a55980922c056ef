"""Issue 21, reliability round 3: run folders, labels, spreadsheets, full disks and hostile manifests.

Every test runs the real thing: `sifa` as a subprocess, real video files, real training steps, real
HTTP on 127.0.0.1, real full disks (a small tmpfs; skipped where it cannot be mounted)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_run import one_error, run_sifa
from conftest import write_motion_dataset
from full_disk import fill, small_disk
from predict_helpers import CATEGORIES, colour_checkpoint, write_colour_video
from sifa_cli.fileio import exclusive_lock

ROOT = Path(__file__).resolve().parents[1]
SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
TINY = ["--model", "sifa_resnet_tiny", "--init", "scratch", "--frames", "8", "--size", "64", "--workers", "0"]


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200", **extra}


def _popen(*args, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*SIFA, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(**env))


@pytest.fixture(autouse=True)
def sifa_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def colour_weights(tmp_path_factory) -> Path:
    return colour_checkpoint(tmp_path_factory.mktemp("ckpt"))


def colour_folder(root: Path, per_class: int = 2) -> Path:
    for colour in CATEGORIES:
        for i in range(per_class):
            write_colour_video(root / colour / f"{colour}_{i}.mp4", [colour] * 10)
    return root


# ---------------------------------------------------------------------------------------------
# Data loss and security


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_two_finetune_runs_into_one_folder_started_together_one_refuses(tmp_path):
    """Item 1: the run folder is locked for the whole run; the folder holds one run's files only."""
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    run = tmp_path / "run"
    args = ["finetune", data, *TINY, "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--out", run]
    first, second = _popen(*args, "--seed", "1"), _popen(*args, "--seed", "2")
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, [(c, err[-2000:]) for c, _, err in outcomes]
    loser = next(err for code, _, err in outcomes if code != 0)
    assert "Traceback" not in loser
    assert [line for line in loser.splitlines() if line.startswith("error: ")] and (
        "being written by another sifa run" in loser or "already holds a training run" in loser), loser
    winner_seed = 1 if outcomes[0][0] == 0 else 2
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == winner_seed
    from sifa_cli.weights.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(run / "last.safetensors")["training"]["config"]["seed"] == winner_seed
    assert not list(tmp_path.glob(".run.lock"))  # released at the end
    resumed = run_sifa("finetune", "--resume", run, "--epochs", "2", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_resume_while_the_run_is_still_training_refuses(tmp_path):
    """Item 2: --resume of a folder another process is still training in refuses, deleting nothing."""
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    run = tmp_path / "run"
    training = _popen("finetune", data, *TINY, "--epochs", "50", "--batch-size", "4", "--val-fraction", "0.25",
                      "--out", run)
    try:
        deadline = time.monotonic() + 240
        while not (run / "train_state.pt").exists():
            assert training.poll() is None and time.monotonic() < deadline, training.communicate()[1][-3000:]
            time.sleep(0.2)
        planted = run / ".last.99999.tmp.safetensors"  # what a save in progress looks like
        planted.write_bytes(b"half")
        resumed = run_sifa("finetune", "--resume", run, env={"OMP_NUM_THREADS": "1"}, timeout=300)
        assert training.poll() is None, "the training run ended before the check"
        line = one_error(resumed, codes=(1,))
        assert "being written by another sifa run" in line and str(run) in line
        assert planted.exists()  # resume's clean-up did not touch the live run's files
    finally:
        training.send_signal(signal.SIGINT)
        training.communicate(timeout=120)


def test_two_evaluate_runs_into_one_out_folder(tmp_path, colour_weights):
    """Item 7: a second evaluate into an --out another run is writing refuses instead of replacing it."""
    data = colour_folder(tmp_path / "data", per_class=1)
    out = tmp_path / "eval"
    with exclusive_lock(tmp_path / ".eval.lock") as locked:  # what a running `sifa evaluate --out eval` holds
        assert locked
        second = run_sifa("evaluate", data, "-w", colour_weights, "--out", out, "--device", "cpu")
    line = one_error(second, codes=(1,))
    assert "being written by another sifa run" in line
    assert not (out / "metrics.json").exists()
    again = run_sifa("evaluate", data, "-w", colour_weights, "--out", out, "--device", "cpu")
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_video_reachable_from_two_class_folders(tmp_path, colour_weights):
    """Item 3: the same file under two labels is an error naming both; twice under one label, a warning."""
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=12)
    (data / "right" / "alias.mp4").symlink_to(data / "left" / "000.mp4")
    line = one_error(run_sifa("finetune", data, *TINY, "--out", tmp_path / "run"))
    assert "'left'" in line and "'right'" in line and "alias.mp4" in line and "000.mp4" in line
    (data / "right" / "alias.mp4").unlink()
    (data / "everything").symlink_to(data)  # a class folder that is a link to the root
    line = one_error(run_sifa("finetune", data, *TINY, "--out", tmp_path / "run"))
    assert "'everything'" in line and "two class folders" in line

    colours = colour_folder(tmp_path / "colours", per_class=1)
    (colours / "red" / "again.mp4").symlink_to(colours / "red" / "red_0.mp4")
    result = run_sifa("evaluate", colours, "-w", colour_weights, "--out", tmp_path / "eval", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reachable twice" in result.stderr and "used once" in result.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["videos"] == len(CATEGORIES)


def test_validation_overlapping_training_is_refused(tmp_path):
    """Item 4: --val the training folder, or one file in both CSVs (even under two labels), is refused."""
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=12)
    line = one_error(run_sifa("finetune", data, "--val", data, *TINY, "--out", tmp_path / "run"))
    assert "6 of its 6 validation videos are also training videos" in line
    train_csv, val_csv = tmp_path / "train.csv", tmp_path / "val.csv"
    train_csv.write_text("".join(f"data/{d}/{i:03d}.mp4,{d}\n" for d in ("left", "right") for i in range(2)))
    val_csv.write_text("data/left/000.mp4,right\ndata/right/002.mp4,right\n")
    line = one_error(run_sifa("finetune", train_csv, "--val", val_csv, *TINY, "--out", tmp_path / "run"))
    assert "1 of its 2 validation videos are also training videos" in line and "000.mp4" in line
    assert not (tmp_path / "run").exists()


FORMULA_LABELS = ["=SUM(1+1)", "+green", "@blue"]  # the colour model's classes, renamed to formulas


def _formula_checkpoint(source: Path, target: Path) -> Path:
    from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(source)
    return save_checkpoint(target, state, {**meta, "categories": FORMULA_LABELS})


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_csv_cells_that_look_like_formulas_are_neutralised(tmp_path, colour_weights):
    """Item 5: every CSV sifa writes (predict, evaluate, the scan report) quotes formula-like cells;
    predict's CSV still resumes, with the names as they are."""
    weights = _formula_checkpoint(colour_weights, tmp_path / "formulas.safetensors")
    videos = tmp_path / "videos"
    for name, colour in (("=1+2.mp4", "red"), ("-cmd.mp4", "green"), ("@x.mp4", "blue"), ("'quoted.mp4", "red")):
        write_colour_video(videos / name, [colour] * 10)
    result = run_sifa("predict", ".", "-w", weights, "-o", tmp_path / "r.csv", "--device", "cpu", cwd=videos)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = _cells(tmp_path / "r.csv")
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert not dangerous, dangerous
    assert "'=1+2.mp4" in cells and "'-cmd.mp4" in cells and "'@x.mp4" in cells and "''quoted.mp4" in cells
    assert "'=SUM(1+1)" in cells and "'+green" in cells
    before = (tmp_path / "r.csv").read_text()
    again = run_sifa("predict", ".", "-w", weights, "-o", tmp_path / "r.csv", "--device", "cpu", cwd=videos)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "r.csv").read_text() == before  # all four recognised as done: nothing scored again
    assert "4" in again.stderr and "already" in again.stderr, again.stderr

    data = tmp_path / "data"
    for label, colour in zip(FORMULA_LABELS, CATEGORIES):
        write_colour_video(data / label / f"{label}.mp4", [colour] * 10)
    (data / "+green" / "-broken.mp4").write_bytes(b"not a video")
    evaluated = run_sifa("evaluate", data, "-w", weights, "--out", tmp_path / "eval", "--device", "cpu")
    assert evaluated.returncode == 1, evaluated.stderr[-3000:]  # the broken file
    cells = _cells(tmp_path / "eval" / "predictions.csv")
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    assert "'=SUM(1+1)" in cells


# ---------------------------------------------------------------------------------------------
# Downloads: hostile manifests and full disks

PAYLOAD = os.urandom(300_000)


@pytest.fixture
def server():
    from weights_http import FileServer

    srv = FileServer(slow_seconds=6.0, flood_bytes=4 << 20).start()
    srv.files["model.bin"] = PAYLOAD
    yield srv
    srv.stop()


def _manifest(tmp_path: Path, url: str, **fields) -> Path:
    from weights_http import write_manifest

    raw = {"arch": "sifa_resnet_tiny", "file_name": "model.bin", "urls": [url], **fields}
    return write_manifest(tmp_path / "team.json", {"team_model": raw})


def test_download_larger_than_the_disk(tmp_path, server):
    """Item 6: a declared size that cannot fit is refused before downloading; an undeclared stream that
    fills the disk names the file and removes the partial."""
    home = tmp_path / "home"
    with small_disk(home, "1M"):
        huge = _manifest(tmp_path, server.url("flood", "model.bin"), size=10**15)
        line = one_error(run_sifa("weights", "download", "team_model", "--manifest", huge, env={"SIFA_HOME": str(home)}))
        assert "not enough disk space" in line and str(10**15) in line
        assert server.get_requests("/flood/model.bin") == []  # nothing was asked for
        undeclared = _manifest(tmp_path, server.url("flood", "model.bin"))
        line = one_error(run_sifa("weights", "download", "team_model", "--manifest", undeclared,
                                  env={"SIFA_HOME": str(home)}))
        assert "model.bin.part" in line and "no space left" in line and "removed" in line
        assert not list(home.rglob("*.part"))


def test_manifest_url_to_a_fifo_or_a_folder(tmp_path):
    """Items 13 and 20: a file:// URL to a FIFO fails at once (no endless wait), a folder is named as one."""
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)
    env = {"SIFA_HOME": str(tmp_path / "home")}
    line = one_error(run_sifa("weights", "download", "team_model", "--manifest", _manifest(tmp_path, fifo.as_uri()),
                              env=env, timeout=60))
    assert "not an ordinary file" in line and "no network" not in line
    folder = tmp_path / "folder"
    folder.mkdir()
    line = one_error(run_sifa("weights", "download", "team_model", "--manifest",
                              _manifest(tmp_path, folder.as_uri()), env=env))
    assert "is a folder" in line and "no network" not in line


def test_weights_rm_during_a_download_leaves_its_partial_file(tmp_path, server):
    """Item 16: `weights rm` waits for nobody and deletes nothing of a download in progress."""
    server.slow_seconds = 25.0  # long enough for `weights rm` to start on a busy machine
    manifest = _manifest(tmp_path, server.url("slow", "model.bin"), size=len(PAYLOAD))
    home = tmp_path / "home"
    downloading = _popen("weights", "download", "team_model", "--manifest", manifest, SIFA_HOME=str(home))
    try:
        deadline = time.monotonic() + 60
        while not list(home.rglob("model.bin.part")):
            assert downloading.poll() is None and time.monotonic() < deadline, downloading.communicate()
            time.sleep(0.05)
        removed = run_sifa("weights", "rm", "team_model", "--manifest", manifest, env={"SIFA_HOME": str(home)})
        line = one_error(removed, codes=(1,))
        assert "being downloaded" in line
        assert list(home.rglob("model.bin.part"))
    finally:
        out, err = downloading.communicate(timeout=120)
    assert downloading.returncode == 0, err[-3000:]
    assert next(home.rglob("model.bin")).read_bytes() == PAYLOAD


@pytest.mark.parametrize("field, value", [("arch_kwargs", [1, 2]), ("input", "frames=8"), ("arch", 5),
                                          ("notes", 3.5), ("num_params", "12M"), ("evaluation", [])])
def test_manifest_fields_of_the_wrong_type(tmp_path, field, value):
    """Item 10: a manifest field of the wrong JSON type is one line naming the entry and the field."""
    manifest = _manifest(tmp_path, "http://127.0.0.1:9/model.bin", **{field: value})
    for command in (["weights", "list"], ["weights", "info", "team_model"]):
        line = one_error(run_sifa(*command, "--manifest", manifest))
        assert "team_model" in line and f"{field} must be" in line


# ---------------------------------------------------------------------------------------------
# Full disks and long names


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_torchscript_export_onto_a_full_disk(tmp_path, colour_weights):
    """Item 8: one line naming the output and the full disk (no abort, exit 134), no temporary file left."""
    disk = tmp_path / "disk"
    with small_disk(disk, "1M"):
        fill(disk, leave=16 << 10)
        result = run_sifa("export", colour_weights, "--format", "torchscript", "--out", disk / "model.pt", timeout=900)
        line = one_error(result)
        assert str(disk / "model.pt") in line and "no space left" in line
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_disk_full_while_finetune_saves_a_checkpoint(tmp_path):
    """Items 9 and 21: a full disk during training is one line naming the checkpoint, not a
    SafetensorError or inline_container traceback, and no temporary file is left behind."""
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=12)
    disk = tmp_path / "disk"
    with small_disk(disk, "1M"):
        fill(disk, leave=48 << 10)  # room for the config and dataset lists, not for a checkpoint
        result = run_sifa("finetune", data, *TINY, "--epochs", "1", "--batch-size", "3", "--out", disk / "run",
                          env={"OMP_NUM_THREADS": "1"}, timeout=300)
        line = one_error(result)
        assert "best.safetensors" in line and "no space left" in line, line
        assert "SafetensorError" not in result.stderr and "inline_container" not in result.stderr
        assert not list(disk.rglob(".*tmp*"))


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_output_names_of_250_characters(tmp_path, colour_weights):
    """Item 19: names the file system takes are not refused because of sifa's own lock or temp file names."""
    write_colour_video(tmp_path / "videos" / "a.mp4", ["red"] * 10)
    results = tmp_path / ("r" * 246 + ".csv")
    predicted = run_sifa("predict", tmp_path / "videos", "-w", colour_weights, "-o", results, "--device", "cpu",
                         timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert results.is_file()
    exported = tmp_path / ("m" * 250 + ".pt")
    result = run_sifa("export", colour_weights, "--format", "torchscript", "--out", exported, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert exported.is_file() and not list(tmp_path.glob(".*"))


# ---------------------------------------------------------------------------------------------
# Crashes, resources and messages


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_non_utf8_stdout_shows_non_ascii_labels_and_paths(tmp_path, colour_weights):
    """Item 12: PYTHONIOENCODING=ascii: the table and -f jsonl work; the JSON reads back exactly."""
    from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(colour_weights)
    weights = save_checkpoint(tmp_path / "accents.safetensors", state, {**meta, "categories": ["rouge é", "vert", "bleu"]})
    video = write_colour_video(tmp_path / "vidéo ☃.mp4", ["red"] * 10)
    env = {"PYTHONIOENCODING": "ascii"}
    table = run_sifa("predict", video, "-w", weights, "--device", "cpu", env=env, timeout=600)
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr[-3000:]
    assert "rouge" in table.stdout
    lines = run_sifa("predict", video, "-w", weights, "--device", "cpu", "-f", "jsonl", env=env, timeout=600)
    assert lines.returncode == 0 and "Traceback" not in lines.stderr, lines.stderr[-3000:]
    record = json.loads(lines.stdout.splitlines()[0])
    assert record["path"] == str(video) and record["top"][0]["label"] == "rouge é"


def test_scan_workers_are_capped(tmp_path):
    """Item 14: --scan-workers beyond what helps is refused before any process starts."""
    data = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=12)
    line = one_error(run_sifa("finetune", data, *TINY, "--scan-workers", "200", "--out", tmp_path / "run"))
    assert "scan_workers" in line.replace("-", "_") and "between 1 and 32" in line
    assert not (tmp_path / "run").exists()


def test_csv_of_current_folder_relative_paths_says_how_paths_are_resolved(tmp_path):
    """Item 15 (the generic part): a CSV written with paths relative to the current folder, not to its
    own folder, is named as such instead of only 'need at least 2 classes'."""
    write_motion_dataset(tmp_path / "data", per_class=2, num_frames=12)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text(
        "".join(f"data/{d}/{i:03d}.mp4,{d}\n" for d in ("left", "right") for i in range(2)))
    result = run_sifa("finetune", "lists/train.csv", *TINY, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode != 0
    assert "relative paths are resolved" in result.stderr and "data/left/000.mp4" in result.stderr
    assert "current folder" in result.stderr


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_resuming_a_two_process_run_in_one_process_is_refused(tmp_path):
    """Item 17: the schedule would be re-planned (the cosine would end at 4.8e-4, not 0): refuse, saying how."""
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sifa_cli.cli.main", "finetune", str(data), *TINY, "--epochs", "1", "--batch-size", "2",
               "--val-fraction", "0.25", "--out", str(run)]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env())
    assert trained.returncode == 0, trained.stderr[-3000:]
    line = one_error(run_sifa("finetune", "--resume", run, "--epochs", "2", env={"OMP_NUM_THREADS": "1"}))
    assert "2 processes" in line and "--nproc_per_node 2" in line
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_emoji_class_names_draw_without_glyph_warnings(tmp_path, colour_weights):
    """Item 21: class names the plot font lacks do not flood the output with matplotlib warnings."""
    from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(colour_weights)
    labels = ["🔥 red", "🌿 green", "💧 blue"]
    weights = save_checkpoint(tmp_path / "emoji.safetensors", state, {**meta, "categories": labels})
    for label, colour in zip(labels, CATEGORIES):
        write_colour_video(tmp_path / "data" / label / "a.mp4", [colour] * 10)
    result = run_sifa("evaluate", tmp_path / "data", "-w", weights, "--out", tmp_path / "eval", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    assert "Glyph" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr


def test_merge_results_into_a_read_only_folder(tmp_path):
    """Item 21: exit 2 and one line naming the output's folder, as other commands do; no temp file named."""
    part = tmp_path / "part.jsonl"
    part.write_text(json.dumps({"path": "/v/a.mp4", "top": [{"label": "x", "score": 1.0}]}) + "\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_sifa("merge-results", locked / "all.jsonl", part, enforce_permissions=True)
    finally:
        locked.chmod(0o755)
    line = one_error(result, codes=(2,))
    assert "no permission to write in" in line and str(locked) in line and ".tmp" not in line


def test_a_live_stream_cut_off_mid_file_is_not_a_normal_end(tmp_path, colour_weights):
    """Item 18: FFmpeg's 'Stream ends prematurely' is an error (exit 1, one line), not 'stream ended'."""
    from weights_http import FileServer

    video = write_colour_video(tmp_path / "colours.mkv", ["red"] * 40 + ["blue"] * 40, fps=10)
    data = video.read_bytes()
    server = FileServer(drop_after=len(data) // 2).start()
    server.files["colours.mkv"] = data
    try:
        result = run_sifa("predict", server.url("drop", "colours.mkv"), "-w", colour_weights, "--device", "cpu",
                          "--stride", "0.4")
    finally:
        server.stop()
    line = one_error(result, codes=(1,))
    assert "broke off" in line and "prematurely" in line


@pytest.mark.timeout(1200)  # minutes on a busy 2-core machine; seconds on CI
def test_a_killed_torchrun_rank_gives_the_survivor_one_line(tmp_path):
    """Item 11: the surviving process says which rank stopped, in one line instead of a gloo traceback."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("finds the rank-1 process through /proc")
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    run, logs = tmp_path / "ddp", tmp_path / "logs"
    # A long monitor interval: torchrun notices the death late, so the survivor meets it in gloo first.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--monitor-interval", "60", "--log-dir", str(logs), "--redirects", "3",
               "-m", "sifa_cli.cli.main", "finetune", str(data), *TINY, "--epochs", "50", "--batch-size", "2",
               "--val-fraction", "0.25", "--out", str(run)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not (run / "metrics.jsonl").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
            time.sleep(0.2)
        rank1 = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if _environ(pid).get("RANK") == "1" and _environ(pid).get("TORCHELASTIC_RUN_ID")
                 and "finetune" in _cmdline(pid)]
        assert len(rank1) == 1, rank1
        os.kill(rank1[0], signal.SIGKILL)
        survivor_log = None
        while survivor_log is None or "error:" not in survivor_log.read_text():
            assert time.monotonic() < deadline
            found = list(logs.rglob("0/stderr.log"))
            survivor_log = found[0] if found else None
            time.sleep(0.2)
    finally:
        launcher.kill()
        launcher.communicate(timeout=60)
    text = survivor_log.read_text()
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "rank 1 stopped" in errors[0] and "--resume" in errors[0], text[-3000:]


def _environ(pid: int) -> dict:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
