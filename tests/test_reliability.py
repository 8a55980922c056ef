"""Issue 11, items 1-6: odd file names, outputs that would destroy inputs or other files, two runs
on one results file, corrupt weights and diverging training. Real files, real subprocess runs."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predict_helpers import colour_checkpoint, write_colour_video

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]


def run_sifa(*args, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*SIFA, *map(str, args)], capture_output=True, timeout=timeout, env=env, **kwargs)


def one_error_line(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. File names that are not UTF-8, and decoders that crash.


def _bytes_name(folder: Path, name: bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    try:
        path.write_bytes(b"")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def test_names_that_are_not_utf8_are_decoded_and_written_exactly(weights, tmp_path):
    folder = tmp_path / "videos"
    write_colour_video(folder / "a.mp4", ["red"] * 10)
    latin1 = _bytes_name(folder, b"b\xe9t\xe9.mp4")
    write_colour_video(tmp_path / "green.mp4", ["green"] * 10).replace(latin1)  # OpenCV cannot write it
    empty = _bytes_name(folder, b"c\xe9.mp4")
    for suffix in (".jsonl", ".json", ".csv"):
        out = tmp_path / f"r{suffix}"
        result = run_sifa("predict", folder, "-w", weights, "-o", out)
        assert result.returncode == 1, result.stderr  # the empty file failed, nothing crashed
        text = out.read_bytes()
        if suffix == ".csv":  # CSV holds the names' own bytes
            assert b"b\xe9t\xe9.mp4,top" in text
            rows = list(csv.DictReader(io.StringIO(text.decode("utf-8", "surrogateescape"), newline="")))
            records = {r["path"]: r for r in rows if r["kind"] in ("top", "error") and r.get("rank") in ("1", "")}
            labels = {path: r["label"] or r["error"] for path, r in records.items()}
        else:  # JSON stays valid UTF-8; the escapes json.loads reads back are the same names
            text.decode("utf-8")
            loaded = _strict_json(text.decode()) if suffix == ".json" else [
                json.loads(line) for line in text.decode().split("\n") if line]
            labels = {r["path"]: r["top"][0]["label"] if "top" in r else r["error"] for r in loaded}
        assert labels[str(latin1)] == "green" and labels[str(folder / "a.mp4")] == "red"
        assert labels[str(empty)].endswith("the file is empty (0 bytes)")
        again = run_sifa("predict", folder, "-w", weights, "-o", out)
        assert b"2 skipped" in again.stderr, again.stderr
    table = run_sifa("predict", folder, "-w", weights)
    assert table.returncode == 1 and b"a.mp4" in table.stdout and b"Traceback" not in table.stderr
    assert b"c\\udce9.mp4: the file is empty" in table.stderr  # the message names the file exactly


def test_a_decoder_crash_fails_that_file_only(weights, tmp_path):
    from sifa_cli.data.decode_worker import CRASH_TEST_VARIABLE

    folder = tmp_path / "videos"
    for name, colour in (("1.mp4", "red"), ("2-crash.mp4", "green"), ("3.mp4", "blue")):
        write_colour_video(folder / name, [colour] * 10)
    out = tmp_path / "r.jsonl"
    env = {**os.environ, CRASH_TEST_VARIABLE: "-crash", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*SIFA, "predict", str(folder), "-w", str(weights), "-o", str(out)],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 1, result.stderr
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["1.mp4"]["top"][0]["label"] == "red" and records["3.mp4"]["top"][0]["label"] == "blue"
    assert "the decoder crashed: SIGSEGV" in records["2-crash.mp4"]["error"]
    assert "2 videos ok, 1 failed" in result.stderr


@pytest.mark.parametrize("backend", ["decord", "auto"])
def test_a_worker_killed_mid_file_is_an_error_for_that_file_and_is_replaced(tmp_path, backend):
    import signal as signals


    from sifa_cli.data.decode import Video
    from sifa_cli.errors import DecodeError

    path = write_colour_video(tmp_path / "clip.mp4", ["red"] * 12, width=64, height=48)
    with Video(path, backend=backend) as video:
        os.kill(video._worker._process.pid, signals.SIGSEGV)  # as if the decoder had crashed
        video._worker._process.wait()  # dead before the read, every run (a crash inside a call: the test above)
        if backend == "decord":
            with pytest.raises(DecodeError, match="cannot decode its frames .the decoder crashed: SIGSEGV"):
                video.read([0, 5])
        else:  # auto falls back to OpenCV, in a fresh worker
            assert video.read([0, 5]).shape[0] == 2 and video.backend == "opencv"
    with Video(path, backend=backend) as video:
        assert video.read([0, 5, 9]).shape[0] == 3


# ---------------------------------------------------------------------------------------------
# 2. An output that resolves to an input is refused, for every command that writes files.


def test_an_output_that_is_an_input_is_refused_and_the_input_is_untouched(app, weights, tmp_path):
    clip = write_colour_video(tmp_path / "clip.mp4", ["red"] * 10)
    original = clip.read_bytes()
    (tmp_path / "link.mp4").symlink_to(clip.name)
    runner = CliRunner()
    attempts = [
        ["visualize", str(clip), "-w", str(weights), "-o", str(clip)],
        ["visualize", str(clip), "-w", str(weights), "-o", str(tmp_path / "link.mp4")],
        ["visualize", str(clip), "-w", str(weights), "-o", str(tmp_path / "sub" / ".." / "clip.mp4")],
        ["predict", str(clip), "-w", str(weights), "-f", "json", "-o", str(clip)],
        ["predict", str(clip), "-w", str(weights), "-f", "json", "-o", str(weights)],
        ["weights", "import", str(weights), "--arch", "sifa_resnet_tiny", "--out", str(weights)],
    ]
    (tmp_path / "sub").mkdir()
    for args in attempts:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "would overwrite the input" in result.stderr and "Traceback" not in result.output, result.output
    assert clip.read_bytes() == original and (tmp_path / "link.mp4").is_symlink()
    assert weights.read_bytes()[:8] == colour_checkpoint(tmp_path).read_bytes()[:8]


# ---------------------------------------------------------------------------------------------
# 3. Two runs on one results file: the second refuses at once, the first keeps every record.


def test_a_second_run_on_the_same_output_refuses_and_the_first_loses_nothing(weights, tmp_path):
    folder = tmp_path / "videos"
    for i in range(6):
        write_colour_video(folder / f"{i:02d}.mp4", [("red", "green", "blue")[i % 3]] * 10, width=32, height=32)
    out = tmp_path / "results.jsonl"
    lock = tmp_path / ".results.jsonl.lock"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([*SIFA, "predict", str(folder), "-w", str(weights), "-o", str(out), "-b", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists(), "the first run never took its lock"
    os.kill(first.pid, signal.SIGSTOP)  # however fast the first run is, it is still running meanwhile
    try:
        second = run_sifa("predict", folder, "-w", weights, "-o", out)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    line = one_error_line(second.stderr)
    assert second.returncode == 1 and "being written by another sifa run" in line
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == [f"{i:02d}.mp4" for i in range(6)]
    assert all("top" in r for r in records)
    assert not lock.exists()  # removed when the first run ended


def test_the_lock_is_released_after_a_refused_or_failed_run(app, weights, tmp_path):
    from sifa_cli.engine.results import lock_results

    clip = write_colour_video(tmp_path / "red.mp4", ["red"] * 10)
    out = tmp_path / "r.jsonl"
    with lock_results(out):  # another process holding the lock: this test
        result = run_sifa("predict", clip, "-w", weights, "-o", out)
        assert result.returncode == 1 and "being written by another sifa run" in one_error_line(result.stderr)
    runner = CliRunner()
    bad = runner.invoke(app, ["predict", str(clip), "-w", str(tmp_path / "missing.safetensors"), "-o", str(out)])
    assert bad.exit_code != 0
    good = runner.invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(out)])
    assert good.exit_code == 0, good.output
    assert json.loads(out.read_text())["top"][0]["label"] == "red"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "red.mp4"]


# ---------------------------------------------------------------------------------------------
# 4. An existing output that is not ours, a symbolic link or read-only is never replaced.


@pytest.mark.parametrize("name, content", [
    ("my.json", "[1, 2, 3]\n"),
    ("my.json", '[{"name": "not sifa"}]\n'),
    ("my.csv", "a,b\n1,2\n"),
    ("my.csv", "path,kind,start,end,rank,label,score,error\nx,hello,,,,,,\n"),
    ("my.jsonl", '{"a": 1}\n'),
])
def test_an_existing_file_that_is_not_ours_is_kept(app, weights, tmp_path, name, content):
    clip = write_colour_video(tmp_path / "red.mp4", ["red"] * 10)
    out = tmp_path / name
    out.write_text(content)
    result = CliRunner().invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(out)])
    assert result.exit_code == 2 and "is not a" in result.stderr and "move it away" in result.stderr, result.output
    assert out.read_text() == content


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_symlinked_or_read_only_output_is_not_replaced(app, weights, tmp_path, suffix):
    clip = write_colour_video(tmp_path / "red.mp4", ["red"] * 10)
    runner = CliRunner()
    target = tmp_path / f"elsewhere{suffix}"
    link = tmp_path / f"link{suffix}"
    link.symlink_to(target.name)
    result = runner.invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(link)])
    assert result.exit_code == 2 and "is a symbolic link" in result.stderr, result.output
    assert link.is_symlink() and not target.exists()

    read_only = tmp_path / f"kept{suffix}"
    read_only.write_text("")
    read_only.chmod(0o444)
    result = runner.invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(read_only)])
    assert result.exit_code == 2 and "is read-only" in result.stderr, result.output
    assert read_only.read_text() == "" and not os.stat(read_only).st_mode & 0o222

    # Our own file of each format is still resumed.
    ours = tmp_path / f"ours{suffix}"
    assert runner.invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(ours)]).exit_code == 0
    again = runner.invoke(app, ["predict", str(clip), "-w", str(weights), "-o", str(ours)])
    assert again.exit_code == 0 and "the video already has results in" in again.stderr, again.output


# ---------------------------------------------------------------------------------------------
# 6. Line-separator characters in file names: our own results read back on resume.


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_names_with_line_separators_resume(app, weights, tmp_path, suffix):
    folder = tmp_path / "videos"
    names = ["a\u2028b.mp4", "c\u2029d.mp4", "e\x85f.mp4", "g\x0bh.mp4", "i\x1cj.mp4"]
    for name in names:
        write_colour_video(folder / name, ["blue"] * 10)
    out = tmp_path / f"results{suffix}"
    runner = CliRunner()
    first = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(out)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(out)])
    assert second.exit_code == 0 and f"all {len(names)} videos already have results" in second.stderr, second.output
    text = out.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        records = [json.loads(line) for line in text.split("\n") if line]
    elif suffix == ".json":
        records = json.loads(text)
    else:
        records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert {Path(r["path"]).name for r in records} == set(names)


# ---------------------------------------------------------------------------------------------
# 5. Damaged weights are refused (or give error records, never NaN); diverging training stops.


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _flip_tensor_bytes(path: Path, out: Path) -> None:
    """Overwrite the first 16 bytes of the stem convolution's weights (every output depends on them)
    with NaN bit patterns."""
    data = bytearray(path.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_size])
    name = "conv1.weight"
    start = 8 + header_size + header[name]["data_offsets"][0]
    data[start:start + 16] = b"\xff\xff\xff\x7f" * 4
    out.write_bytes(bytes(data))


def _without_digest(path: Path, out: Path) -> None:
    """The same checkpoint as a file written before checkpoints carried their tensor checksum."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["sifa"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    del meta["tensors_sha256"]
    save_file(tensors, str(out), metadata={"sifa": json.dumps(meta)})


def test_damaged_checkpoints_are_refused_and_never_give_nan(app, weights, tmp_path):
    from sifa_cli.weights.checkpoint import load_checkpoint

    clip = write_colour_video(tmp_path / "red.mp4", ["red"] * 10)
    runner = CliRunner()
    damaged = tmp_path / "damaged.safetensors"
    _flip_tensor_bytes(weights, damaged)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["predict", str(clip), "-w", str(damaged), "-o", str(out)])
    assert result.exit_code == 1 and "do not match the checksum" in result.stderr, result.output
    verify = runner.invoke(app, ["weights", "verify", str(damaged)])
    assert verify.exit_code == 1 and "do not match the checksum" in verify.stderr, verify.output

    # An older file without the checksum still loads; damaged, its NaN scores are error records.
    old = tmp_path / "old.safetensors"
    _without_digest(weights, old)
    assert "tensors_sha256" not in load_checkpoint(old)[1]
    assert runner.invoke(app, ["predict", str(clip), "-w", str(old), "-o", str(tmp_path / "ok.json")]).exit_code == 0
    old_damaged = tmp_path / "old_damaged.safetensors"
    _flip_tensor_bytes(old, old_damaged)
    result = runner.invoke(app, ["predict", str(clip), "-w", str(old_damaged), "-o", str(out)])
    assert result.exit_code == 1, result.output
    [record] = _strict_json(out.read_text())
    assert "top" not in record and "not finite numbers" in record["error"]
    verify = runner.invoke(app, ["weights", "verify", str(old_damaged)])
    assert verify.exit_code == 1 and "NaN or infinite" in verify.stderr, verify.output

    # What sifa writes is checked: `weights verify` says so.
    good = runner.invoke(app, ["weights", "verify", str(weights)], env={"COLUMNS": "300"})
    assert good.exit_code == 0 and "match their recorded checksum" in good.stdout, good.output


def test_diverging_training_stops_with_an_error_and_keeps_the_last_good_checkpoint(app, tmp_path):
    import yaml

    from conftest import write_motion_dataset
    from sifa_cli.weights.checkpoint import load_checkpoint

    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=32)
    tiny = ["--model", "sifa_resnet_tiny", "--frames", "8", "--size", "32", "--workers", "0", "--batch-size", "4"]

    runner = CliRunner()
    diverged = runner.invoke(app, ["finetune", str(data), *tiny, "--epochs", "1", "--lr", "1e30",
                                   "--out", str(tmp_path / "run1")])
    assert diverged.exit_code == 1, diverged.output
    assert "training diverged in epoch 1" in diverged.stderr and "no checkpoint" in diverged.stderr
    assert not list((tmp_path / "run1").glob("*.safetensors"))

    run = tmp_path / "run2"
    first = runner.invoke(app, ["finetune", str(data), *tiny, "--epochs", "1", "--out", str(run)])
    assert first.exit_code == 0, first.output
    saved = {name: (run / name).read_bytes() for name in ("best.safetensors", "last.safetensors", "train_state.pt")}
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["lr"] = 1e30  # the second epoch diverges
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = runner.invoke(app, ["finetune", "--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 1, resumed.output
    assert "training diverged in epoch 2" in resumed.stderr and f"from epoch 1, is {run / 'best.safetensors'}" in \
        resumed.stderr.replace("\n", "")
    assert {name: (run / name).read_bytes() for name in saved} == saved
    state, _ = load_checkpoint(run / "best.safetensors")
    assert all(bool(t.isfinite().all()) for t in state.values() if t.is_floating_point())
