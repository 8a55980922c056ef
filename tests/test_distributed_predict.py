"""`sifa predict` on several processes: two CPU processes under torchrun (real subprocesses, gloo-free:
they share work through torchrun's store) writing one resumable output, `--shard K/N` jobs, and
`sifa merge-results`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predict_helpers import CATEGORIES, colour_checkpoint, write_colour_video
from sifa_cli.engine.distributed_predict import parse_shard, shard_of
from sifa_cli.errors import InputError

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
VIDEOS = 9


@pytest.fixture(scope="module")
def setup(tmp_path_factory, app):
    """Nine colour videos of different lengths and noise (so every score differs), one broken file,
    the tiny colour model, and the results of one process for all of them."""
    root = tmp_path_factory.mktemp("distributed")
    folder = root / "videos"
    for i in range(VIDEOS):
        write_colour_video(folder / f"clip_{i}.mp4", [CATEGORIES[i % 3]] * (10 + i), seed=i)
    (folder / "clip_9_broken.mp4").write_bytes(b"not a video")
    weights = colour_checkpoint(root)
    reference = root / "one_process.jsonl"
    result = CliRunner().invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(reference)])
    assert result.exit_code == 1, result.output  # the broken file
    records = [json.loads(line) for line in reference.read_text().splitlines()]
    assert len(records) == VIDEOS + 1 and "error" in records[-1]
    assert len({json.dumps(r["top"]) for r in records[:-1]}) == VIDEOS
    return folder, weights, records


def _env() -> dict:
    # One thread per process so that the two processes do not fight over the cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(got: list[dict], expected: list[dict]) -> bool:
    """Equal results, scores within 2e-6: the CPU inference path's batched convolutions may differ in
    the 6th decimal when a clip shares its batch with other clips (one process batches clips of
    several videos, a shard or a rank other ones)."""
    def split(records):
        scores = [e["score"] for r in records for e in r.get("top", [])]
        rest = [{**r, "top": [e["label"] for e in r.get("top", [])]} for r in records]
        return scores, rest

    (got_scores, got_rest), (want_scores, want_rest) = split(got), split(expected)
    return got_rest == want_rest and all(abs(a - b) <= 2e-6 for a, b in zip(got_scores, want_scores))


@pytest.mark.slow
def test_two_processes_under_torchrun_write_one_output_and_resume(setup, tmp_path):
    folder, weights, reference = setup
    output = tmp_path / "results.jsonl"
    command = [*TORCHRUN_2, "-m", "sifa_cli.cli.main", "predict", str(folder), "-w", str(weights),
               "-o", str(output), "--batch-size", "1"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=240, env=_env())
    assert first.returncode == 1, first.stderr[-3000:]  # the broken file, as with one process
    # Every video once, in input order, with the scores one process gives them.
    assert _same(_records(output), reference)
    summary = re.search(r"on 2 processes \(cpu, videos per process (\d+)/(\d+)\)", first.stderr)
    assert summary, first.stderr[-3000:]
    per_process = [int(n) for n in summary.groups()]
    assert sum(per_process) == VIDEOS + 1 and min(per_process) >= 1
    assert first.stderr.count("error: ") == 1 and first.stdout == ""  # rank 0 alone reports

    # Interrupted after four results, the last one cut short: the re-run does the rest.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:4]) + lines[4][:30])
    again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=_env())
    assert again.returncode == 1, again.stderr[-3000:]
    assert "4 skipped" in again.stderr
    assert _same(_records(output), reference)


def test_shard_jobs_cover_the_inputs_once_resume_and_merge(setup, tmp_path, app):
    folder, weights, reference = setup
    runner = CliRunner()
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}.jsonl"
        result = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(part), "--shard", f"{k}/3"])
        assert result.exit_code == (1 if k == 1 else 0), result.output  # the broken file is the 10th: job 1
        # Job K takes every third video starting with the K-th, whatever the others do.
        assert _same(_records(part), reference[k - 1 :: 3])
        parts.append(part)
    again = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(parts[1]), "--shard", "2/3"])
    assert again.exit_code == 0 and "already have results" in again.stderr

    merged = tmp_path / "all.jsonl"
    result = runner.invoke(app, ["merge-results", str(merged), *map(str, parts)])
    assert result.exit_code == 0, result.output
    assert "10 videos from 3 files" in result.stderr and "1 of them failed" in result.stderr
    by_path = {r["path"]: r for r in _records(merged)}
    assert _same([by_path[r["path"]] for r in reference], reference)
    # The merged file resumes like any output: only the failed video is tried again.
    resumed = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(merged)])
    assert resumed.exit_code == 1 and f"{VIDEOS} skipped" in resumed.stderr

    # CSV parts merge into CSV; a success in one part wins over a failure of the same video in another.
    csv_parts = []
    for k in (1, 2):
        part = tmp_path / f"part{k}.csv"
        runner.invoke(app, ["predict", str(folder), "-w", str(weights), "-o", str(part), "--shard", f"{k}/2"])
        csv_parts.append(part)
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("path,kind,start,end,rank,label,score,error\n"
                     f"{folder / 'clip_9_broken.mp4'},top,,,1,red,0.5,\n")
    merged_csv = tmp_path / "all.csv"
    result = runner.invoke(app, ["merge-results", str(merged_csv), *map(str, csv_parts), str(fixed)])
    assert result.exit_code == 0 and "10 videos from 3 files" in result.stderr, result.output
    assert ",error," not in merged_csv.read_text().split("\n", 1)[1]  # no error row (the header names the column)
    refused = runner.invoke(app, ["merge-results", str(tmp_path / "all.json"), str(csv_parts[0])])
    assert refused.exit_code != 0 and "only be merged into a .csv" in refused.stderr


def test_shard_and_merge_refuse_bad_input(setup, tmp_path, app):
    folder, weights, _ = setup
    runner = CliRunner()
    for bad in ("0/3", "4/3", "1/0", "2", "a/b"):
        result = runner.invoke(app, ["predict", str(folder), "-w", str(weights), "--shard", bad])
        assert result.exit_code == 2 and result.stderr.startswith("error: --shard"), (bad, result.output)
    empty = runner.invoke(app, ["predict", str(folder / "clip_0.mp4"), "-w", str(weights), "--shard", "2/2"])
    assert empty.exit_code == 0 and "none of the inputs falls to this job" in empty.stderr
    # With --output, that job still leaves its (empty) part, so merging every job's file works.
    parts = [tmp_path / f"s{k}.jsonl" for k in (1, 2)]
    for k, part in enumerate(parts, 1):
        job = runner.invoke(app, ["predict", str(folder / "clip_0.mp4"), "-w", str(weights), "--shard", f"{k}/2",
                                  "-o", str(part)])
        assert job.exit_code == 0, job.output
    assert parts[1].read_text() == "" and "wrote an empty" in job.stderr
    merged = runner.invoke(app, ["merge-results", str(tmp_path / "m.jsonl"), *map(str, parts)])
    assert merged.exit_code == 0 and "1 video from 2 files" in merged.stderr, merged.output
    # Parts made with other settings would give a file that can never be resumed.
    other = tmp_path / "views.jsonl"
    assert runner.invoke(app, ["predict", str(folder / "clip_1.mp4"), "-w", str(weights), "--views", "2x1",
                               "-o", str(other)]).exit_code == 0
    mixed = runner.invoke(app, ["merge-results", str(tmp_path / "mixed.jsonl"), str(parts[0]), str(other)])
    assert mixed.exit_code == 2 and "holds results made with other settings" in mixed.stderr, mixed.output
    assert "views 1x1 in s1.jsonl, 2x1 in views.jsonl" in mixed.stderr and not (tmp_path / "mixed.jsonl").exists()
    not_results = tmp_path / "other.jsonl"
    not_results.write_text('["a list"]\n')
    for parts, message in (([tmp_path / "missing.jsonl"], "no such results file"),
                           ([not_results], "not a sifa results file"),
                           ([weights], "end in .jsonl, .json or .csv")):
        result = runner.invoke(app, ["merge-results", str(tmp_path / "out.jsonl"), *map(str, parts)])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_shard_parsing_and_split():
    assert parse_shard(None) is None and parse_shard(" 2 / 5 ") == (2, 5)
    with pytest.raises(InputError, match="counted from 1"):
        parse_shard("0/2")
    videos = [Path(f"v{i}") for i in range(7)]
    parts = [shard_of(videos, (k, 3)) for k in (1, 2, 3)]
    assert sorted(sum(parts, []), key=videos.index) == videos
    assert parts[1] == [Path("v1"), Path("v4")]


def test_torchrun_rank_reads_the_environment_and_keeps_a_named_device(monkeypatch):
    """finetune and predict find their place and device the same way (engine/device.TorchrunRank)."""
    from sifa_cli.engine.device import TorchrunRank
    from sifa_cli.engine.train_distributed import training_device

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    alone = TorchrunRank.from_environment()
    assert (alone.rank, alone.world_size, alone.enabled, alone.is_main) == (0, 1, False, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    third = TorchrunRank.from_environment()
    assert (third.rank, third.world_size, third.local_rank, third.enabled, third.is_main) == (3, 4, 1, True, False)
    assert third.device("cpu").type == "cpu" and training_device("cpu").type == "cpu"
