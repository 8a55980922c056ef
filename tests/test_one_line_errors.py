"""Bad inputs that used to end in a traceback or a misleading message (issue 11): each now gets one
clear line and exit code 1 or 2. Every run is a real `sifa` subprocess."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_run import error_lines, one_error, run_sifa, sifa_env
from crafted_media import audio_only_avi, audio_only_wav
from predict_helpers import colour_checkpoint, write_colour_video

GIB = 1 << 30


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return colour_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_colour_video(tmp_path_factory.mktemp("clip") / "red.mp4", ["red"] * 12)


# ---------------------------------------------------------------------------------------------
# Mistakes said at once


def test_predict_mistakes_are_said_before_torch_loads(tmp_path, video):
    """A mistyped option or a missing file is reported before torch is imported (seconds of import), by
    the real CLI in a child process that says at exit whether torch was loaded."""
    driver = ("import atexit, sys\n"
              "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules, file=sys.stderr))\n"
              "from sifa_cli.cli.main import main\n"
              "sys.argv[0] = 'sifa'\n"
              "main()\n")
    env = sifa_env()
    for args, expected in [(["missing.mp4"], "missing.mp4: no such file or folder"),
                           ([video, "-o", "x.edl"], "is a timeline export: add --timeline"),
                           ([video, "--top-k", "0"], "--top-k must be at least 1, got 0"),
                           ([video, "--window", "2"], "--window applies to --timeline"),
                           ([video, "--views", "2y3"], "--views")]:
        result = subprocess.run([sys.executable, "-c", driver, "predict", *map(str, args)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert expected in one_error(result), result.stderr
        assert "torch loaded: False" in result.stderr, (args, result.stderr)
    # the same driver does report torch once a run gets as far as the model: the probe can fail
    result = subprocess.run([sys.executable, "-c", driver, "predict", str(video), "-w", "no_such_model"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "torch loaded: True" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# Outputs that cannot be written


def test_predict_output_under_a_file_or_in_proc(tmp_path, weights, video):
    for output, expected in [(video / "sub" / "r.csv", f"{video} is a file, not a folder"),
                             ("/proc/r.json", "/proc does not accept new files")]:
        result = run_sifa("predict", video, "-w", weights, "-o", output)
        assert result.returncode == 2
        assert one_error(result).startswith(f"error: --output {output}: {expected}")


def test_outputs_in_a_read_only_folder(tmp_path, weights, video):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for command in (["predict", video, "-w", weights, "-o", folder / "r.jsonl"],
                        ["visualize", video, "-w", weights, "-o", folder / "v.mp4"],
                        ["finetune", tmp_path, "-o", folder / "run"]):
            result = run_sifa(*command, enforce_permissions=True)
            assert result.returncode == 2, result.stderr
            assert f"no permission to write in {folder}" in one_error(result)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_visualize_into_proc_does_not_blame_the_codecs(weights, video):
    result = run_sifa("visualize", video, "-w", weights, "-o", "/proc/x.mp4")
    line = one_error(result)
    assert "/proc does not accept new files" in line and "OpenCV" not in line


# ---------------------------------------------------------------------------------------------
# visualize options


def test_visualize_block_with_no_names(tmp_path, weights, video):
    result = run_sifa("visualize", video, "-w", weights, "--block", ",", "-o", tmp_path / "v.mp4")
    assert result.returncode == 2
    assert "--block ',' names no block" in one_error(result)


def test_visualize_huge_panel_names_its_own_option(tmp_path, weights, video):
    result = run_sifa("visualize", video, "-w", weights, "--panel-size", "100000", "-o", tmp_path / "v.mp4",
                      data_limit=3 * GIB)
    line = one_error(result)
    assert "--panel-size must be between 64 and 2048 pixels, got 100000" in line
    assert "--batch-size" not in line and "--views" not in line


# ---------------------------------------------------------------------------------------------
# Weights: manifests, metadata, damaged files


def test_manifest_url_that_is_not_a_url(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"format": "sifa-manifest/1", "weights": {
        "x": {"arch": "sifa_resnet_tiny", "file_name": "x.safetensors", "urls": ["not a url"]}}}))
    result = run_sifa("weights", "download", "x", "--manifest", manifest, env={"SIFA_HOME": str(tmp_path / "h")})
    assert "entry 'x': 'not a url' is not a URL" in one_error(result)


def _with_meta(source, target, change):
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["sifa"])
    change(meta)
    save_file(load_file(str(source)), str(target), metadata={"sifa": json.dumps(meta)})
    return target


def test_checkpoint_metadata_out_of_limits(tmp_path, weights, video):
    negative = _with_meta(weights, tmp_path / "neg.safetensors", lambda m: m["arch_kwargs"].update(clip_length=-8))
    result = run_sifa("predict", video, "-w", negative)
    assert "clip_length must be a multiple of 8 between 8 and 256" in one_error(result)
    # 100000 frames a clip once took 3.5 GB and 40 s for one 12-frame video.
    huge = _with_meta(weights, tmp_path / "huge.safetensors", lambda m: m["input"].update(frames=100000))
    result = run_sifa("predict", video, "-w", huge, data_limit=2 * GIB)
    assert "frames=100000 must be between 1 and 256" in one_error(result)


def test_batch_size_that_cannot_be_allocated(weights, video):
    result = run_sifa("predict", video, "-w", weights, "--timeline", "--window", "0.2", "--stride", "0.002",
                      "--batch-size", "100000000", data_limit=2 * GIB)
    assert result.returncode == 2
    line = one_error(result)
    assert "--batch-size 100000000: one batch of 8x32x32 clips needs" in line and "use at most" in line


@pytest.fixture(scope="module")
def damaged_weights(tmp_path_factory, weights):
    folder = tmp_path_factory.mktemp("damaged")
    data = weights.read_bytes()
    (folder / "cut.safetensors").write_bytes(data[:40])  # cut inside its JSON header
    (folder / "five.safetensors").write_bytes(data[:5])
    (folder / "bogus.safetensors").write_bytes(struct.pack("<Q", 10**12) + data[8:])
    return folder


@pytest.mark.parametrize("name, command, words", [
    ("cut", "verify", "truncated or corrupt safetensors file: its header is said to take"),
    ("five", "predict", "only 5 bytes, too short for a safetensors file"),
    ("bogus", "predict", "its header is said to take 1000000000000 bytes"),
])
def test_damaged_safetensors_are_not_called_pickles(damaged_weights, video, name, command, words):
    path = damaged_weights / f"{name}.safetensors"
    args = ["predict", video, "-w", path] if command == "predict" else ["weights", "verify", path]
    line = one_error(run_sifa(*args))
    assert words in line and "pickle" not in line, line


# ---------------------------------------------------------------------------------------------
# Inputs


def test_audio_only_files_have_no_video_stream(tmp_path, weights):
    wav = audio_only_wav(tmp_path / "tone.wav")
    avi = audio_only_avi(tmp_path / "tone.avi")
    result = run_sifa("predict", wav, avi, "-w", weights)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {wav}: no video stream in this file (it holds only audio)",
                                   f"error: {avi}: no video stream in this file (it holds only audio)"]


def test_symbolic_link_loop_and_broken_link(tmp_path, weights, video):
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nothing.mp4")
    result = run_sifa("predict", tmp_path / "a.mp4", tmp_path / "gone.mp4", video, "-w", weights)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {tmp_path / 'a.mp4'}: symbolic link loop (the link leads back to itself)",
        f"error: {tmp_path / 'gone.mp4'}: broken symbolic link (it points to {tmp_path / 'nothing.mp4'}, "
        "which does not exist)",
    ]


def test_folders_that_cannot_be_read(tmp_path, weights, video):
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    write_colour_video(locked / "sub" / "blue.mp4", ["blue"] * 12)
    write_colour_video(locked / "green.mp4", ["green"] * 12)
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    write_colour_video(sealed / "red.mp4", ["red"] * 12)
    (locked / "sub").chmod(0o000)
    sealed.chmod(0o000)
    try:
        result = run_sifa("predict", locked, sealed, sealed / "red.mp4", "-w", weights, enforce_permissions=True)
    finally:
        (locked / "sub").chmod(0o755)
        sealed.chmod(0o755)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {locked / 'sub'}: cannot read this folder (Permission denied); its videos were left out",
        f"error: {sealed}: cannot read this folder (Permission denied); its videos were left out",
        f"error: {sealed / 'red.mp4'}: permission denied (a folder on the way cannot be searched)",
    ]
    assert "green.mp4" in result.stdout  # what could be read was


# ---------------------------------------------------------------------------------------------
# Resuming predictions and fine-tuning runs


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_scores_a_replaced_video_again(tmp_path, weights, suffix):
    import csv

    write_colour_video(tmp_path / "v" / "red.mp4", ["red"] * 12)  # stays as it was
    other = write_colour_video(tmp_path / "v" / "other.mp4", ["blue"] * 12)
    out = tmp_path / f"r{suffix}"

    def labels():
        if suffix == ".csv":
            with out.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if row["kind"] == "top" and row["rank"] == "1"]
            return {os.path.basename(row["path"]): row["label"] for row in rows}, len(rows)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return {os.path.basename(r["path"]): r["top"][0]["label"] for r in records}, len(records)

    first = run_sifa("predict", tmp_path / "v", "-w", weights, "-o", out)
    assert first.returncode == 0, first.stderr
    assert labels() == ({"red.mp4": "red", "other.mp4": "blue"}, 2)
    write_colour_video(other, ["green"] * 16)  # the same name, another video
    second = run_sifa("predict", tmp_path / "v", "-w", weights, "-o", out)
    assert second.returncode == 0, second.stderr
    assert "1 video changed since its results were written; scoring it again" in second.stderr
    assert "1 skipped" in second.stderr
    assert labels() == ({"red.mp4": "red", "other.mp4": "green"}, 2)


def _finetune(data, out, *extra):
    return run_sifa("finetune", data, "-o", out, "--model", "sifa_resnet_tiny", "--size", "32", "--epochs", "1",
                    "--workers", "0", "--scan-workers", "2", "--batch-size", "2", *extra)


def test_finetune_failing_before_its_first_epoch_leaves_nothing_that_blocks_a_retry(tmp_path):
    from conftest import write_motion_dataset

    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=16, size=32)
    run = tmp_path / "run"
    failed = _finetune(data, run, "--frames", "12")  # fails when the model is built, after the scan
    assert "clip_length must be a multiple of 8" in one_error(failed)
    assert not run.exists()
    retry = _finetune(data, run, "--frames", "8")
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert (run / "best.safetensors").is_file()


def test_finetune_refuses_to_drop_a_class_silently(tmp_path):
    from conftest import write_motion_dataset

    data = write_motion_dataset(tmp_path / "data", per_class=3, directions=("left", "right", "up"),
                                num_frames=8, size=32)
    for video in (data / "up").iterdir():
        video.write_bytes(video.read_bytes()[:500])  # every 'up' video cut short
    result = _finetune(data, tmp_path / "run", "--frames", "8")
    assert result.returncode == 2
    line = one_error(result)
    assert "1 class has no usable training videos: 'up' (3 videos, e.g." in line
    assert "--allow-missing-classes" in line
    allowed = _finetune(data, tmp_path / "run", "--frames", "8", "--allow-missing-classes")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "WARNING: 1 class has no usable training videos: 'up'" in allowed.stderr
    with safe_open(str(tmp_path / "run" / "best.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["sifa"])["categories"] == ["left", "right"]
