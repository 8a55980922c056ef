"""Bounded memory, disk and time on inputs a user or a server can hand us (issue 11, items 7-9)."""

from __future__ import annotations

import pytest

from cli_run import one_error, run_sifa
from predict_helpers import colour_checkpoint, write_colour_video
from sifa_cli.engine import predict as engine
from sifa_cli.engine.predict import plan_windows
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
    assert f"more than the {engine.MAX_TIMELINE_WINDOWS} allowed per video" in message
    suggested = float(message.rsplit("at least ", 1)[1].split()[0])
    # The stride it suggests really fits under the cap, and is not much more than needed.
    assert len(plan_windows(100.0, 0.002, suggested)) <= engine.MAX_TIMELINE_WINDOWS
    assert suggested < 1.05 * 100.0 / engine.MAX_TIMELINE_WINDOWS


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
