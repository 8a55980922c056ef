"""`sifa predict` on streams: real HTTP on 127.0.0.1, the real CLI in a subprocess, real Ctrl-C.

The model is the tiny colour model of predict_helpers (it names a clip's colour), so a video that
turns from red to blue must turn its windows' labels from red to blue.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import write_video
from predict_helpers import colour_frames, write_colour_video
from typer.testing import CliRunner
from weights_http import FileServer

from sifa_cli.data.inputs import parse_source
from sifa_cli.engine.live import LiveScorer, open_stream
from sifa_cli.errors import InputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    files = FileServer().start()
    yield files
    files.stop()


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sifa_cli.cli.main", "predict", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, **kwargs)


def test_parse_source_tells_streams_from_paths():
    assert parse_source("camera:0").camera == 0
    assert parse_source("rtsp://10.0.0.2:554/live").url == "rtsp://10.0.0.2:554/live"
    assert parse_source("HTTP://example.org/a.mjpg").url is not None
    for path in ("clip.mp4", "videos/", "*.mp4", "C:/videos/a.mp4", "0"):
        assert parse_source(path) is None
    with pytest.raises(InputError, match="camera:N"):
        parse_source("camera:front")
    with pytest.raises(InputError, match="unsupported stream scheme 'ftp'"):
        parse_source("ftp://example.org/a.mp4")


def test_a_video_served_over_http_is_labelled_window_by_window(server, weights, tmp_path):
    # 2 s red then 2 s blue at 10 fps; the model's clip is 8 frames, a window every 0.4 s (4 frames).
    video = write_colour_video(tmp_path / "colours.mkv", ["red"] * 20 + ["blue"] * 20, fps=10)
    server.files["colours.mkv"] = video.read_bytes()
    out = tmp_path / "windows.jsonl"
    result = run_cli(server.url("files", "colours.mkv"), "-w", str(weights), "--device", "cpu",
                     "--stride", "0.4", "-k", "2", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # windows end at frames 8, 12, ..., 40: nine of them, each a full clip
    assert np.allclose([(r["start"], r["end"]) for r in records], [(0.4 * k, 0.4 * k + 0.8) for k in range(9)])
    assert all(r["frames"] == 8 and len(r["top"]) == 2 for r in records)
    labels = [r["top"][0]["label"] for r in records]
    assert labels[:3] == ["red"] * 3 and labels[-3:] == ["blue"] * 3
    # The table printed the same windows as they came, and a summary line ends the run.
    printed = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(printed) == 9 and printed[0].split()[2] == "red" and printed[-1].split()[2] == "blue"
    assert "stream ended: 9 windows over 4.0 s of stream (40 frames" in " ".join(result.stderr.split())


def test_a_stream_shorter_than_one_clip_gives_one_window_with_a_note(server, weights, tmp_path):
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.weights.checkpoint import load_model

    video = write_colour_video(tmp_path / "short.mkv", ["green"] * 5, fps=10)
    server.files["short.mkv"] = video.read_bytes()
    model, meta = load_model(str(weights), "cpu")
    scorer = LiveScorer(Predictor(model, meta, views="1x1"))
    [window] = scorer.run(open_stream(parse_source(server.url("files", "short.mkv"))), threading.Event())
    assert (window.start, window.end, window.frames) == (0.0, 0.5, 5)
    assert window.top[0][0] == "green" and "spread evenly over the clip" in window.notes[0]
    assert scorer.stats.ended == "end of stream"


class PacedStream:
    """Serves one file slowly, the way a live source delivers it: chunks with pauses, no seeking."""

    def __init__(self, data: bytes, seconds: float):
        self.data, self.seconds = data, seconds
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.data)))
                self.end_headers()
                pieces = 200
                step = max(1, len(owner.data) // pieces)
                try:
                    for offset in range(0, len(owner.data), step):
                        if owner.stop.wait(owner.seconds / pieces):
                            return
                        self.wfile.write(owner.data[offset : offset + step])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/live.mkv"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ctrl_c_ends_a_stream_cleanly_with_a_summary(weights, tmp_path):
    colours = (["red"] * 10 + ["blue"] * 10) * 20  # 40 s at 10 fps, served over 40 s
    video = write_video(tmp_path / "long.mkv", colour_frames(colours), fps=10, fourcc="FFV1")
    stream = PacedStream(video.read_bytes(), seconds=40)
    out = tmp_path / "live.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "sifa_cli.cli.main", "predict", stream.url, "-w", str(weights), "--device", "cpu",
         "--stride", "0.5", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        first = process.stdout.readline()  # the first window's line: the stream is being scored
        assert " s " in first, process.stderr.read() if process.poll() is not None else first
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        stream.close()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    summary = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(summary) == 1, stderr
    windows = int(summary[0].split()[1])
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert len(records) == windows >= 1
    assert records[-1]["end"] < 30, "it stopped long before the stream's end"


def test_memory_stays_bounded_however_long_the_stream(server, weights, tmp_path):
    """400 frames of 64x48 pass through (3.7 MB as RGB); what the scorer holds at once is the ring of
    one clip span plus the hand-over queue."""
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.weights.checkpoint import load_model

    video = write_colour_video(tmp_path / "long.mkv", (["red"] * 50 + ["blue"] * 50) * 4, fps=25, width=64,
                               height=48)
    server.files["long.mkv"] = video.read_bytes()
    model, meta = load_model(str(weights), "cpu")
    scorer = LiveScorer(Predictor(model, meta, views="1x1"), stride=4.0, queue_frames=8)
    capture = open_stream(parse_source(server.url("files", "long.mkv")))
    tracemalloc.start()
    try:
        windows = list(scorer.run(capture, threading.Event()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scorer.stats.frames == 400 and len(windows) == 5  # ends at frames 8, 108, 208, 308, then the tail
    frame_bytes = 64 * 48 * 3
    assert peak < 60 * frame_bytes, f"peak {peak / 1e6:.2f} MB for frames of {frame_bytes / 1e3:.1f} kB"


@pytest.mark.parametrize("extra, message", [
    (["--views", "2x1"], "one clip per window"),
    (["--format", "csv"], "JSON Lines"),
    (["--annotate", "out.mp4"], "--annotate needs a video file"),
    (["clip.mp4"], "a stream is predicted on its own"),
])
def test_stream_options_that_cannot_apply_are_refused_in_one_line(app, weights, extra, message):
    result = CliRunner().invoke(app, ["predict", "http://127.0.0.1:9/x.mkv", "-w", str(weights), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_an_existing_output_or_a_missing_camera_is_refused(app, weights, tmp_path):
    out = tmp_path / "old.jsonl"
    out.write_text('{"path": "earlier"}\n')
    result = CliRunner().invoke(app, ["predict", "camera:0", "-w", str(weights), "-o", str(out)])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert out.read_text() == '{"path": "earlier"}\n'
    result = CliRunner().invoke(app, ["predict", "camera:63", "-w", str(weights), "--device", "cpu"])
    assert result.exit_code == 1 and "cannot open the camera" in result.stderr
