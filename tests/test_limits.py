"""Bounded memory, disk and time on inputs a user or a server can hand us (issue 11, items 7-9)."""

from __future__ import annotations

import pytest

from cli_run import one_error, run_sifa
from predict_helpers import colour_checkpoint, write_colour_video
from sifa_cli.engine.records import MAX_TIMELINE_WINDOWS, plan_windows
from sifa_cli.errors import InputError

GIB = 1 << 30


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return colour_checkpoint(tmp_path_factory.mktemp("ckpt"))


# ---------------------------------------------------------------------------------------------
# 7. Timeline windows


@pytest.mark.parametrize("window, stride", [(float("nan"), 1.0), (2.0, float("nan")), (float("inf"), 1.0),
                                            (2.0, float("inf")), (2.0, -1.0)])
def test_timeline_window_and_stride_must_be_finite_and_positive(window, stride):
    with pytest.raises(InputError, match="positive, finite numbers of seconds"):
        plan_windows(10.0, window, stride)


def test_timeline_window_count_is_capped_with_the_stride_to_use():
    # 100 s every millisecond: 99 999 windows, five times the cap.
    with pytest.raises(InputError) as info:
        plan_windows(100.0, 0.002, 0.001)
    message = str(info.value)
    assert f"more than the {MAX_TIMELINE_WINDOWS} allowed per video" in message
    suggested = float(message.rsplit("at least ", 1)[1].split()[0])
    # The stride it suggests really fits under the cap, and is not much more than needed.
    assert len(plan_windows(100.0, 0.002, suggested)) <= MAX_TIMELINE_WINDOWS
    assert suggested < 1.05 * 100.0 / MAX_TIMELINE_WINDOWS


@pytest.mark.parametrize("value", ["nan"])
def test_cli_refuses_a_non_finite_window_in_one_line(tmp_path, weights, value):
    video = write_colour_video(tmp_path / "v.mp4", ["red"] * 12)
    result = run_sifa("predict", video, "-w", weights, "--timeline", "--window", value)
    assert result.returncode == 2
    assert "--window and --stride must be positive, finite" in one_error(result)


def test_cli_tiny_stride_is_one_error_record_not_gigabytes(tmp_path, weights):
    # Once killed by the kernel at 21.5 GB; with 2 GiB of heap it must end quickly and clearly.
    video = write_colour_video(tmp_path / "v.mp4", ["red"] * 12)
    out = tmp_path / "r.jsonl"
    result = run_sifa("predict", video, "-w", weights, "--timeline", "--window", "1e-9", "--stride", "1e-9",
                      "-o", out, data_limit=2 * GIB, timeout=120)
    line = one_error(result, codes=(1,))
    assert str(video) in line and "allowed per video; use a --stride of at least" in line
    assert '"error"' in out.read_text()


# ---------------------------------------------------------------------------------------------
# 8. Frames declared far larger than the file

_PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from sifa_cli.data.dataset import Sample, scan_videos
from sifa_cli.data.decode import Video, capture_native_stderr
from sifa_cli.errors import SifaError

small, big, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with Video(small, backend="auto") as video:  # decoders loaded and warmed before the baseline
    video.read([0])
with Video(small, backend="opencv") as video:
    video.read([0])
status = open("/proc/self/status").read()
data_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmData:")))
# Half a gigabyte of heap to spare: the old code's one decoded 8200x8200 frame took a gigabyte.
limit = (data_kb << 10) + (512 << 20)
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
messages = []
with capture_native_stderr():
    if mode == "scan":
        usable, skipped = scan_videos([Sample(str(big), "a"), Sample(str(small), "b"), Sample(str(big), "c")],
                                      min_frames=1, workers=2)
        messages = [s.problem for s in skipped] + [f"usable {s.label}" for s in usable]
    else:
        try:
            Video(big, backend=mode)
        except SifaError as exc:
            messages.append(str(exc))
        except MemoryError:
            messages.append("MemoryError")
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"messages": messages, "growth_mb": growth}))
"""


def _peak(small, big, mode):
    import json
    import subprocess
    import sys

    from cli_run import ROOT

    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(small), str(big), mode], capture_output=True,
                            text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def huge_frames(tmp_path_factory):
    """526 KB of valid Motion-JPEG that decodes into 8200x8200 frames (67.2 megapixels, just over the limit)."""
    from crafted_media import mjpeg_avi

    folder = tmp_path_factory.mktemp("huge")
    return mjpeg_avi(folder / "small.avi", 64, 48), mjpeg_avi(folder / "huge.avi", 8200, 8200)


def test_declared_sizes_are_read_from_container_headers(make_video, huge_frames, tmp_path):
    from sifa_cli.data.probe import declared_frame_size

    for name, fourcc in [("a.mp4", "mp4v"), ("a.mov", "mp4v"), ("a.avi", "MJPG"), ("a.mkv", "FFV1"),
                         ("a.webm", "VP80")]:
        assert declared_frame_size(make_video(name, num_frames=3, width=80, height=48, fourcc=fourcc)) == (80, 48)
    assert declared_frame_size(huge_frames[1]) == (8200, 8200)
    y4m = tmp_path / "b.y4m"
    y4m.write_bytes(b"YUV4MPEG2 W16000 H9000 F25:1 C420jpeg\nFRAME\n" + bytes(100))
    assert declared_frame_size(y4m) == (16000, 9000)


@pytest.mark.parametrize("backend", ["auto", "decord", "opencv"])
def test_huge_declared_frames_are_refused_before_any_is_decoded(huge_frames, backend):
    report = _peak(*huge_frames, backend)
    assert report["messages"] == [f"{huge_frames[1]}: resolution 8200x8200 is above the supported 67 megapixels"]
    assert report["growth_mb"] < 64, report


def test_scan_memory_stays_small_with_huge_declared_frames(huge_frames):
    # Once 8.8 GB with 2 scan workers on 16000x16000 frames.
    report = _peak(*huge_frames, "scan")
    assert sorted(report["messages"]) == ["resolution 8200x8200 is above the supported 67 megapixels"] * 2 + ["usable b"]
    assert report["growth_mb"] < 64, report


# ---------------------------------------------------------------------------------------------
# 9. Downloads: never beyond the declared size, and --timeout bounds stalls


@pytest.fixture
def http_server():
    from weights_http import FileServer

    server = FileServer(trickle_seconds=0.2, flood_bytes=20 << 20).start()
    server.files["model.bin"] = PAYLOAD
    yield server
    server.stop()


@pytest.fixture
def team_entry(tmp_path, monkeypatch):
    """make(url, **fields): a registry entry from a team manifest named by $SIFA_MANIFEST."""
    from sifa_cli.weights.manifest import load_registry
    from weights_http import write_manifest

    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIFA_OFFLINE", raising=False)

    def make(url, **fields):
        raw = {"arch": "sifa_resnet_tiny", "file_name": "model.bin", "urls": [url], "sha256": PAYLOAD_SHA,
               "size": len(PAYLOAD)}
        raw.update(fields)
        monkeypatch.setenv("SIFA_MANIFEST", str(write_manifest(tmp_path / "team.json", {"team_model": raw})))
        return load_registry().get("team_model")

    return make


PAYLOAD = bytes(range(256)) * 1200  # 307 200 bytes
PAYLOAD_SHA = __import__("hashlib").sha256(PAYLOAD).hexdigest()


def test_download_stops_at_the_declared_size(http_server, team_entry):
    # The server sends 20 MB with no length; only the manifest's 307 200 bytes may reach the disk.
    from sifa_cli.weights.download import fetch

    entry = team_entry(http_server.url("flood", "model.bin"))
    seen = []
    path = fetch(entry, progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == PAYLOAD
    assert max(seen) == len(PAYLOAD)


def test_download_without_a_declared_size_stops_at_the_cap(http_server, team_entry, monkeypatch):
    from sifa_cli.errors import WeightsError
    from sifa_cli.weights import download
    from sifa_cli.weights.cache import cache_path

    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 1 << 20)
    entry = team_entry(http_server.url("flood", "model.bin"), size=None)
    seen = []
    with pytest.raises(WeightsError, match=r"sent more than 1048576 bytes and the manifest declares no size; "
                                           r"the partial file was removed"):
        download.fetch(entry, progress=lambda done, total: seen.append(done))
    assert max(seen) <= 1 << 20
    assert [p.name for p in cache_path(entry).parent.iterdir()] == ["model.bin.lock"]


def test_download_announcing_more_than_the_declared_size_is_refused_unread(http_server, team_entry):
    from sifa_cli.errors import WeightsError
    from sifa_cli.weights.download import fetch

    entry = team_entry(http_server.url("biglen", "model.bin"))
    seen = []
    with pytest.raises(WeightsError, match=r"announces 614400 bytes but the manifest declares 307200"):
        fetch(entry, progress=lambda done, total: seen.append(done))
    assert seen == []


def test_timeout_ends_a_download_that_trickles_a_byte_at_a_time(http_server, team_entry, tmp_path):
    # A byte every 0.2 s never trips a per-read socket timeout of 1 s; it used to hang for 17 hours.
    import os
    import time

    team_entry(http_server.url("trickle", "model.bin"))
    started = time.monotonic()
    result = run_sifa("weights", "download", "team_model", "--timeout", "1", timeout=60,
                      env={"SIFA_HOME": os.environ["SIFA_HOME"], "SIFA_MANIFEST": os.environ["SIFA_MANIFEST"]})
    line = one_error(result, codes=(1,))
    assert "download stalled: 127.0.0.1:" in line and "sent only" in line and "bytes in 1 s" in line, line
    assert time.monotonic() - started < 45
