"""`sifa visualize`: capture, the three views, the video and sheet files, and the command line.

Videos are real files written with OpenCV; the model is a real sifa_resnet_tiny; the arrow test sets a
block's offset conv by hand so the offsets the model computes are a known shift.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from sifa_cli import visualize as vis
from sifa_cli.visualize import render as render_module
from sifa_cli.cli import visualize as visualize_cli
from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError
from sifa_cli.models import create_model, predict_proba
from sifa_cli.weights.checkpoint import save_checkpoint
from sifa_cli.weights.manifest import load_registry

CATEGORIES = ["waving", "clapping", "jumping"]
SIZE = 64


def tiny_meta(step: int = 1) -> dict:
    return {
        "format": "sifa-checkpoint/1",
        "arch": "sifa_resnet_tiny",
        "arch_kwargs": {"clip_length": 16},
        "categories": CATEGORIES,
        "input": {"frames": 16, "step": step, "sampling": "dense", "size": SIZE, "resize": SIZE},
    }


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("sifa_resnet_tiny", num_classes=len(CATEGORIES), clip_length=16).eval()


def decoded_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def set_offset_shift(block: nn.Module, dy: float, dx: float) -> None:
    """Make the block's offset conv output the same (dy, dx) for every tap and location: zero weights
    and a bias (the conv itself has none, so it is swapped for one that has)."""
    old = block.conv_offset
    conv = nn.Conv3d(old.in_channels, old.out_channels, old.kernel_size, padding=old.padding, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias[0::2] = dy
        conv.bias[1::2] = dx
    block.conv_offset = conv


# ---------------------------------------------------------------------------------------------
# Capture


def test_capture_leaves_the_model_output_unchanged_and_records_every_block(tiny_model):
    clip = torch.randn(1, 3, 16, SIZE, SIZE)
    with torch.inference_mode():
        plain = predict_proba(tiny_model, clip)[0]
    captures, probabilities = vis.capture_sifa(tiny_model, clip)
    torch.testing.assert_close(probabilities, plain, rtol=0, atol=0)
    assert list(captures) == ["layer2.1", "layer3.1", "layer4.1", "layer4_dual.1"]
    layer2 = captures["layer2.1"]
    assert layer2.offsets.shape == (4, 9, 2, 8, 8) and layer2.correlation.shape == (4, 9, 8, 8)
    assert captures["layer4_dual.1"].frames == 2  # the dual path pools time once more
    # No hook is left behind: a second forward pass records nothing.
    block = dict(tiny_model.sifa_blocks())["layer2.1"]
    assert not block.sifa._forward_hooks


def test_captured_offsets_are_the_shift_set_in_the_offset_conv(tiny_model):
    set_offset_shift(dict(tiny_model.sifa_blocks())["layer3.1"], dy=0.5, dx=-1.25)
    captures, _ = vis.capture_sifa(tiny_model, torch.randn(1, 3, 16, SIZE, SIZE), ["layer3.1"])
    offsets = captures["layer3.1"].offsets
    np.testing.assert_allclose(offsets[:, :, 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(offsets[:, :, 1], -1.25, atol=1e-6)


def test_list_blocks_reports_feature_sizes(tiny_model):
    blocks = vis.describe_blocks(tiny_model, InputSpec(frames=16, size=SIZE, resize=SIZE))
    sizes = {b.name: (b.frames, b.height, b.width, b.stride) for b in blocks}
    assert sizes == {"layer2.1": (4, 8, 8, 8), "layer3.1": (4, 4, 4, 16), "layer4.1": (4, 2, 2, 32),
                     "layer4_dual.1": (2, 4, 4, 16)}


def test_clip_frames_map_to_feature_frames():
    assert [vis.feature_frame_of(i, 16, 4) for i in range(16)] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert [vis.feature_frame_of(i, 16, 2) for i in range(16)] == [0] * 8 + [1] * 8


# ---------------------------------------------------------------------------------------------
# The video


def test_output_decodes_with_one_frame_per_clip_frame_at_the_sampling_rate(tiny_model, make_video, tmp_path):
    # 30 fps: step 2 of a checkpoint without a time span is every 2nd frame at 30 fps (issue 20)
    video = make_video("clip.mp4", num_frames=40, width=80, height=64, fps=30)
    out, sheet = tmp_path / "out.mp4", tmp_path / "sheet.png"
    report = vis.visualize(video, tiny_model, tiny_meta(step=2), out, sheet=sheet,
                           views=("offsets", "attention"), panel_size=128)

    frames = decoded_frames(out)
    # Each picture is the whole 80x64 frame at the crop's scale (the 64x64 crop is 128 px): 160x128.
    expected_size = (2 * 160 + vis.GAP, vis.HEADER_HEIGHT + vis.CAPTION_HEIGHT + 128)
    assert len(frames) == 16 == report.frames
    assert {f.shape for f in frames} == {(expected_size[1], expected_size[0], 3)}
    assert report.size == expected_size
    # Every 2nd source frame is sampled, so the clip plays at half the source rate to keep its duration.
    assert report.fps == pytest.approx(15)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(15, abs=0.01)
    assert report.prediction.label in CATEGORIES

    picture = cv2.imread(str(sheet))
    assert picture is not None and picture.shape[0] >= expected_size[1] and picture.shape[1] >= expected_size[0]
    assert not list(tmp_path.glob(".out.*")), "the partial file was left behind"


def test_the_predicted_label_is_what_predict_gives_for_one_centre_view(tiny_model, make_video):
    from sifa_cli.engine.predict import Predictor

    video = make_video("wide.mp4", num_frames=30, width=112, height=80)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), panel_size=160)
    [result] = Predictor(tiny_model, tiny_meta(), views="1x1", top_k=1).predict([video])
    label, score = result.top[0]
    assert rendering.prediction.label == label
    assert rendering.prediction.probability == pytest.approx(score, abs=1e-6)


def test_a_video_shorter_than_a_clip_is_spread_with_a_note(tiny_model, make_video, tmp_path):
    video = make_video("short.mp4", num_frames=10, width=64, height=64)
    report = vis.visualize(video, tiny_model, tiny_meta(), tmp_path / "short_sifa.mp4", panel_size=96)
    assert report.frames == 16 and len(decoded_frames(report.out)) == 16
    assert any("10 frames, fewer than the 16" in note and "spread evenly" in note for note in report.notes)


YELLOW_MIN = np.array([0, 170, 170])  # BGR: the arrow colour after anti-aliasing, B stays low
YELLOW_MAX = np.array([110, 255, 255])


def arrow_pixels(panel: np.ndarray) -> np.ndarray:
    return cv2.inRange(panel, YELLOW_MIN, YELLOW_MAX) > 0


def base_dots(panel: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of the white dots that mark the arrows' starting points."""
    white = cv2.inRange(panel, np.array([225, 225, 225]), np.array([255, 255, 255]))
    count, _, stats, centroids = cv2.connectedComponentsWithStats(white)
    return np.array([centroids[i] for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 3])


@pytest.mark.parametrize("dy, dx", [(0.0, 0.4), (0.4, 0.0), (0.0, -0.4), (-0.3, -0.3)])
def test_arrows_point_along_the_shift_set_in_the_offset_conv(tiny_model, make_video, dy, dx):
    grey = [np.full((SIZE, SIZE, 3), 110, np.uint8)] * 24
    video = make_video("grey.mp4", frames=grey, width=SIZE, height=SIZE)
    set_offset_shift(dict(tiny_model.sifa_blocks())["layer2.1"], dy, dx)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), views=("offsets",), block="layer2.1",
                                         panel_size=256, arrows="absolute")
    layout = rendering.layout
    x0, y0 = layout.panel_origin(0)

    def panel_of(frame: np.ndarray) -> np.ndarray:
        return frame[y0 : y0 + layout.panel, x0 : x0 + layout.panel]

    # Clip frames 0-3 make feature frame 0: nothing to attend from, so no arrow.
    assert not arrow_pixels(panel_of(rendering.frames[2])).any()

    panel = panel_of(rendering.frames[9])  # feature frame 2, showing the step 1 -> 2
    cell = layout.panel / 8  # panel pixels per feature pixel of layer2 (8x8 for 64x64 input)
    arrow = np.array([dx, dy]) * cell  # (x, y) in panel pixels, about 13 long: bases are 32 apart
    length = np.linalg.norm(arrow)
    mask = arrow_pixels(panel)
    bases = base_dots(panel)
    assert len(bases) == 64, "one arrow base per location of layer2's 8x8 grid"

    # Around each base (closer to it than to any other arrow) the arrow colour lies along the shift.
    radius = 14
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = ys**2 + xs**2 <= radius**2
    checked = 0
    for bx, by in bases:
        cx, cy = int(round(bx)), int(round(by))
        if not (radius <= cx < layout.panel - radius and radius <= cy < layout.panel - radius):
            continue
        window = mask[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] & disc
        drift = np.array([xs[window].mean() + cx - bx, ys[window].mean() + cy - by])
        assert drift @ arrow / (np.linalg.norm(drift) * length) > 0.95, (bx, by, drift)
        assert 0.25 * length < np.linalg.norm(drift) < 0.9 * length, (bx, by, drift)
        checked += 1
    assert checked >= 25

    # Halfway along every arrow there is arrow colour, and none behind its base.
    def colour_at(points: np.ndarray) -> np.ndarray:
        inside = (points >= 0).all(axis=1) & (points < layout.panel - 1).all(axis=1)
        px = np.round(points[inside]).astype(int)
        return mask[px[:, 1], px[:, 0]]

    assert colour_at(bases + 0.5 * arrow).mean() > 0.9
    assert colour_at(bases - 0.5 * arrow).mean() < 0.1


def test_relative_arrows_take_off_the_mean_shift_and_show_it_once(tiny_model, make_video):
    """A shift that is the same everywhere is no motion of one place against another: relative arrows
    are dots only, and the one cyan arrow in the crop's corner points along the shift."""
    grey = [np.full((SIZE, SIZE, 3), 110, np.uint8)] * 24
    video = make_video("grey.mp4", frames=grey, width=SIZE, height=SIZE)
    set_offset_shift(dict(tiny_model.sifa_blocks())["layer2.1"], 0.0, 0.5)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), views=("offsets",), block="layer2.1",
                                         panel_size=256, arrows="relative")
    x0, y0 = rendering.layout.crop_origin(0)
    panel = rendering.frames[9][y0 : y0 + 256, x0 : x0 + 256]
    assert not arrow_pixels(panel).any()
    assert len(base_dots(panel)) == 64
    cyan = cv2.inRange(panel, np.array([170, 170, 0]), np.array([255, 255, 110])) > 0
    ys, xs = np.nonzero(cyan)
    assert xs.max() - xs.min() > 0.8 * 0.5 * 256 / 8 and ys.max() - ys.min() < 14  # along x, 0.5 cells long
    assert "minus mean (x +0.50, y +0.00)" in " ".join(caption[0] for caption, _ in rendering.rendered.panels[9])


def test_a_wide_video_shows_the_whole_frame_with_the_crop_outlined(tiny_model, make_video, tmp_path):
    frames = [np.full((64, 128, 3), 120, np.uint8)] * 20
    video = make_video("wide.mp4", frames=frames, width=128, height=64)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), views=("attention",), panel_size=256)
    layout = rendering.layout
    assert layout.picture == (512, 256) and layout.inset == (128, 0)
    x0, y0 = layout.panel_origin(0)
    picture = rendering.frames[8][y0 : y0 + 256, x0 : x0 + 512].astype(int)
    # outside the crop: the frame, dimmed; the crop's outline at its edges
    dimmed = 120 * vis.OUTSIDE_CROP
    assert abs(picture[128, 20].mean() - dimmed) < 12 and abs(picture[128, 500].mean() - dimmed) < 12
    assert picture[128, 127].min() > 200 and picture[128, 384].min() > 200
    # the heat-map's colour scale sits in the header, from dark to the colour map's brightest
    header = rendering.frames[8][: vis.HEADER_HEIGHT].astype(int)
    for level in (0, 255):
        colour = cv2.applyColorMap(np.array([[level]], np.uint8), vis.HEAT_COLOURMAP)[0, 0].astype(int)
        assert (np.abs(header - colour).sum(axis=2) < 30).sum() >= 12, level


def test_a_very_elongated_video_shows_the_middle_of_the_frame(tiny_model, make_video, tmp_path):
    video = make_video("strip.mp4", width=400, height=16)  # a picture 25 crops wide in full
    out = tmp_path / "strip_sifa.mp4"
    report = vis.visualize(video, tiny_model, tiny_meta(), out)
    assert report.size[0] <= vis.MAX_WIDTH and report.size[1] <= vis.MAX_HEIGHT, report.size
    assert any("pictures show its middle" in note for note in report.notes)
    capture = cv2.VideoCapture(str(out))
    assert capture.read()[0] and int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == report.size[0]
    capture.release()


def test_the_sheet_has_one_column_per_step_and_captions_in_seconds(tiny_model, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=40, width=64, height=64, fps=20)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), panel_size=128)
    picks = vis.sheet_frames(16, rendering.captures.values())
    assert len(picks) == 3  # 4 feature frames: steps 0->1, 1->2, 2->3
    sheet = vis.contact_sheet(rendering.rendered, rendering.layout, picks)
    cell_w, cell_h = 128 + vis.GAP, vis.CAPTION_HEIGHT + 128 + vis.GAP
    assert sheet.shape[1] == 3 * cell_w - vis.GAP and sheet.shape[0] == vis.HEADER_HEIGHT + 2 * cell_h - vis.GAP
    (full, short), _ = rendering.rendered.panels[picks[0]][0]  # a caption in full, and short for narrow panels
    # The clip is the middle 16 frames (12..27) of 40 at 20 fps; feature frames are 4 clip frames each.
    assert full.endswith(f"{13.5 / 20:.2f} s to {17.5 / 20:.2f} s"), full
    assert short.endswith(f"{13.5 / 20:.2f}-{17.5 / 20:.2f} s") and len(short) < len(full), short


def test_a_caption_too_long_for_its_panel_is_said_shorter_before_it_is_cut():
    full = "layer3.1 offsets: scene moves x +3.8, y +0.0 px/frame, zoom -0.4 %/frame; one motion explains 78 %"
    short = "layer3.1: x +3.8 y +0.0 px/f, zoom -0.4 %/f, fit 78 %"
    width = {text: cv2.getTextSize(text, render_module.FONT, 0.45, 1)[0][0] for text in (full, short)}
    assert render_module.fit_caption((full, short), width[full], 0.45) == full
    assert render_module.fit_caption((full, short), width[full] - 1, 0.45) == short
    assert render_module.fit_caption((full, short), width[short] - 1, 0.45).endswith("...")  # then cut
    assert render_module.fit_caption(full, width[full] - 1, 0.45).endswith("...")  # a single form is cut


def test_a_sheet_of_many_steps_wraps_into_bands_in_time_order(tiny_model, make_video, tmp_path, monkeypatch):
    video = make_video("clip.mp4", num_frames=40, width=64, height=64, fps=20)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), panel_size=128)
    picks = vis.sheet_frames(16, rendering.captures.values())
    rows = len(rendering.rendered.panels[0])
    monkeypatch.setattr(render_module, "SHEET_MAX_COLUMNS", 2)  # 3 steps: a band of 2, then a band of 1
    sheet = vis.contact_sheet(rendering.rendered, rendering.layout, picks)
    cell_w, cell_h = 128 + vis.GAP, vis.CAPTION_HEIGHT + 128 + vis.GAP
    assert sheet.shape[1] == 2 * cell_w - vis.GAP and sheet.shape[0] == vis.HEADER_HEIGHT + 2 * rows * cell_h - vis.GAP
    whole = vis.contact_sheet(rendering.rendered, rendering.layout, picks[:2])  # the first band alone
    band = slice(vis.HEADER_HEIGHT, vis.HEADER_HEIGHT + rows * cell_h - vis.GAP)
    assert np.array_equal(sheet[band], whole[band])
    # the third step starts the second band, under the first; the place beside it stays empty
    third = vis.contact_sheet(rendering.rendered, rendering.layout, picks[2:])
    top = vis.HEADER_HEIGHT + rows * cell_h
    assert np.array_equal(sheet[top:top + rows * cell_h - vis.GAP, :128], third[vis.HEADER_HEIGHT:, :128])
    assert (sheet[top + vis.CAPTION_HEIGHT:top + cell_h - vis.GAP, cell_w:] == render_module.BACKGROUND).all()


def test_a_block_with_a_single_feature_frame_has_nothing_to_show(tiny_model, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=12, width=64, height=64)
    meta = tiny_meta()
    meta["input"]["frames"] = 8  # the dual path pools 8 frames into one feature frame
    with pytest.raises(InputError, match="single feature frame"):
        vis.visualize(video, tiny_model, meta, tmp_path / "o.mp4", block="layer4_dual.1")
    report = vis.visualize(video, tiny_model, meta, tmp_path / "o.mp4", block="all", panel_size=64)
    assert report.frames == 8


def test_match_arrows_are_the_shift_where_every_tap_correlates_alike(tiny_model, make_video):
    """On a uniform grey clip every tap of a query correlates the same, so where it finds its match (the
    attention-weighted mean of its sampling positions) is the regular grid's centre moved by the shift:
    the default arrows then equal the absolute ones."""
    grey = [np.full((SIZE, SIZE, 3), 110, np.uint8)] * 24
    video = make_video("grey.mp4", frames=grey, width=SIZE, height=SIZE)
    set_offset_shift(dict(tiny_model.sifa_blocks())["layer2.1"], 0.0, 0.4)
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(), views=("offsets",), block="layer2.1",
                                         panel_size=256)
    capture = rendering.captures["layer2.1"]
    match, absolute = vis.arrow_field(capture, "match"), vis.arrow_field(capture, "absolute")
    # the clip went through a lossy codec, so "alike" is up to its noise
    np.testing.assert_allclose(match[1:, :, 1:-1, 1:-1], absolute[1:, :, 1:-1, 1:-1], atol=0.02)
    np.testing.assert_allclose(absolute[1:, 1], 0.4, atol=1e-5)
    assert "where each place finds its match" in rendering.rendered.header


# ---------------------------------------------------------------------------------------------
# Heat-map and point view, fed with crafted captures


def crafted_capture(frames: int = 2, size: int = 8) -> vis.BlockCapture:
    return vis.BlockCapture(
        name="crafted",
        offsets=np.zeros((frames, 9, 2, size, size), np.float32),
        correlation=np.zeros((frames, 9, size, size), np.float32),
        kernel_size=3,
        dilation=1,
        channels=16,
    )


def brightest(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    y, x = np.unravel_index(grey.argmax(), grey.shape)
    return np.array([y, x])


@pytest.mark.parametrize("offset, landing", [((0.0, 0.0), (2, 5)), ((1.0, -2.0), (3, 3))])
def test_heat_map_is_brightest_where_the_correlation_lands(offset, landing):
    capture = crafted_capture()
    rng = np.random.default_rng(0)
    capture.correlation[1] = rng.uniform(0, 0.05, capture.correlation[1].shape)
    capture.correlation[1, 4, 2, 5] = 1.0  # the centre tap of query (2, 5)
    capture.offsets[1, 4, :, 2, 5] = offset  # ... moved, so it samples frame 1 at `landing`
    geometry = vis.PanelGeometry(panel=256, input_size=SIZE, corner_aligned=False)
    heat = vis.attention_landing(capture, 1)
    frame = np.full((256, 256, 3), 90, np.uint8)
    image = vis.render_attention(frame, heat, geometry, vis.HeatScale.of([heat]))
    expected = np.array(geometry.to_panel(*landing, 8, 8), dtype=float)
    assert np.abs(brightest(image) - expected).max() <= 6
    # Far from the peak the frame shows through nearly unchanged.
    assert abs(int(image[10, 10].mean()) - 90) < 25


@pytest.mark.parametrize("temperature", [1.0, 20.0])
def test_displacement_is_the_softmax_weighted_sampling_position(temperature):
    capture = dataclasses.replace(crafted_capture(), temperature=temperature)
    capture.correlation[1, :, 3, 3] = 0.1
    capture.correlation[1, 5, 3, 3] = 0.6  # tap (kh=1, kw=2): regular place one cell right
    capture.offsets[1, 5, :, 3, 3] = (0.5, 1.0)
    weights = np.exp(temperature * capture.correlation[1, :, 3, 3].astype(np.float64))
    weights /= weights.sum()
    tap_y, tap_x = capture.regular_taps()
    expected = (weights @ (tap_y + capture.offsets[1, :, 0, 3, 3]), weights @ (tap_x + capture.offsets[1, :, 1, 3, 3]))
    moved = vis.displacement(capture, 1)
    np.testing.assert_allclose(moved[:, 3, 3], expected, rtol=1e-5)
    if temperature == 20.0:  # a sharp softmax: the strongest tap's sampling position
        np.testing.assert_allclose(moved[:, 3, 3], (0.5, 2.0), atol=1e-3)
    np.testing.assert_allclose(moved[:, 0, 0], 0.0, atol=1e-6)  # equal weights, no offset: the query itself


def test_point_view_draws_the_largest_disc_at_the_strongest_tap():
    capture = crafted_capture()
    capture.correlation[1, :, 3, 3] = 0.1
    capture.correlation[1, 8, 3, 3] = 1.0  # tap (kh=2, kw=2): regular place (4, 4)
    capture.offsets[1, 8, :, 3, 3] = (0.0, 1.0)  # moved one cell right: samples (4, 5)
    geometry = vis.PanelGeometry(panel=256, input_size=SIZE, corner_aligned=True)
    query_panel = tuple(float(v) for v in geometry.to_panel(3, 3, 8, 8))[::-1]  # (x, y)
    view = vis.plan_point_view(capture, geometry, query_panel)
    assert view.query == (3, 3)
    image = vis.render_point(np.full((256, 256, 3), 100, np.uint8), capture, 1, geometry, view)

    cyan = cv2.inRange(image, np.array([200, 200, 0]), np.array([255, 255, 80]))
    _, _, stats, centroids = cv2.connectedComponentsWithStats(cyan)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    expected_y, expected_x = view.to_view(*geometry.to_panel(4, 5, 8, 8), 256)
    assert np.hypot(centroids[largest][0] - expected_x, centroids[largest][1] - expected_y) < 3
    # A disc sits on every tap's sampled position (the eight regular ones and the moved one).
    tap_y, tap_x = capture.regular_taps()
    sample_y, sample_x = 3 + tap_y, 3 + tap_x + capture.offsets[1, :, 1, 3, 3]
    view_y, view_x = view.to_view(*geometry.to_panel(sample_y, sample_x, 8, 8), 256)
    covered = cyan[np.round(view_y).astype(int), np.round(view_x).astype(int)] > 0
    assert covered[[0, 1, 2, 3, 5, 6, 7, 8]].all()  # the centre tap lies under the query's cross


# ---------------------------------------------------------------------------------------------
# Command line


@pytest.fixture
def checkpoint(tiny_model, tmp_path) -> Path:
    return save_checkpoint(tmp_path / "tiny.safetensors", tiny_model, tiny_meta())


def test_cli_writes_video_and_sheet(checkpoint, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=24, width=80, height=64)
    out, sheet = tmp_path / "overlay.mp4", tmp_path / "sheet.png"
    result = subprocess.run(
        [sys.executable, "-m", "sifa_cli.cli.main", "visualize", str(video), "--weights", str(checkpoint),
         "--offsets", "--attention", "--block", "all", "--point", "40,30", "--out", str(out),
         "--sheet", str(sheet), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in " ".join(result.stdout.split())
    frames = decoded_frames(out)
    assert len(frames) == 16
    assert cv2.imread(str(sheet)) is not None


def test_json_has_the_numbers_per_block_and_step(tiny_model, make_video):
    """Per block and feature step: the mean offset and displacement in feature cells and in frame pixels
    per frame. The offset conv is set to a known shift, so the numbers can be checked."""
    set_offset_shift(dict(tiny_model.sifa_blocks())["layer3.1"], 0.25, -0.5)
    # 30 fps: the clip spans 16 frames x step 2 at 30 fps, so it samples every 2nd frame
    video = make_video("clip.mp4", num_frames=40, width=128, height=64, fps=30.0)  # short side 64 = the model's resize
    rendering = vis.render_visualization(video, tiny_model, tiny_meta(step=2), views=("offsets",), block="layer3.1")
    data = rendering.numbers["blocks"]["layer3.1"]
    assert data["grid"] == [4, 4] and data["video_frames_per_step"] == 8.0  # 4 clip frames of 2 video frames
    assert data["frame_pixels_per_cell"] == [16.0, 16.0]  # 64 / 4 model pixels; the frame is at the model's scale
    assert len(data["steps"]) == 3 and data["steps"][0]["step"] == [0, 1]
    np.testing.assert_allclose(data["offset"]["cells"], [0.25, -0.5], atol=1e-4)
    np.testing.assert_allclose(data["offset"]["pixels_per_frame"], [0.25 * 16 / 8, -0.5 * 16 / 8], atol=1e-3)
    for step in data["steps"]:
        np.testing.assert_allclose(step["offset"]["cells"], [0.25, -0.5], atol=1e-4)


def test_whole_picture_fit_reads_a_zoom_and_tells_a_camera_move_from_one_moving_part():
    """The similarity fit in the numbers and the caption: a field that grows by 2 % of the frame per
    feature step is a zoom in of 2 %/step, wholly explained; one patch moving alone is explained badly."""
    from sifa_cli.visualize.capture import BlockCapture
    from sifa_cli.visualize.motion import ClipScale, block_motion, motion_summary

    frames, h, w, kk = 3, 6, 8, 9
    ys = ((np.arange(h) + 0.5) * 2 / h - 1)[:, None] * np.ones((1, w))
    xs = ((np.arange(w) + 0.5) * 2 / w - 1)[None, :] * np.ones((h, 1))
    offsets = np.zeros((frames, kk, 2, h, w), np.float32)
    offsets[:, :, 0] = 0.02 * ys * h / 2  # in cells: 2 % of each place's distance from the centre
    offsets[:, :, 1] = 0.02 * xs * w / 2
    # equal correlations: every tap weighs the same, so the displacement is the mean offset (taps cancel)
    zoom = BlockCapture("layer3.1", offsets, np.zeros((frames, kk, h, w), np.float32), 3, 1, 8, 10.0)
    scale = ClipScale((10.0, 10.0), 2.0)  # 2 video frames per feature step
    fit = block_motion(zoom, scale)["whole_picture"]
    assert fit["zoom_percent_per_frame"] == pytest.approx(1.0, abs=1e-3)  # 2 % a step, 1 % a frame
    assert fit["rotation_degrees_per_frame"] == pytest.approx(0.0, abs=1e-3) and fit["explained"] > 0.99
    summary, short = motion_summary(zoom, scale)
    assert "zoom +1.0 %/frame" in summary and "explains 100 %" in summary
    assert "x +0.0, y +0.0 px/frame" in summary  # a pure zoom moves the picture nowhere on average, never "-0.0"
    assert short == "x +0.0 y +0.0 px/f, zoom +1.0 %/f, fit 100 %"  # the same for narrow panels
    flat = dataclasses.replace(zoom, offsets=np.full_like(offsets, -0.001))  # a hair up and left: rounds to zero
    assert motion_summary(flat, scale)[0].startswith("scene moves x +0.0, y +0.0 px/frame")
    patch = np.zeros_like(offsets)
    patch[:, :, 1, 1:4, 1:4] = 2.0  # a few places move 2 cells right, the rest stay
    part = dataclasses.replace(zoom, offsets=patch)
    assert block_motion(part, scale)["whole_picture"]["explained"] < 0.5


def test_cli_json_is_written_beside_the_video_and_never_replaced_silently(cli, checkpoint, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=24, width=80, height=64)
    numbers = tmp_path / "numbers.json"
    result = cli(video, "--weights", checkpoint, "--offsets", "--out", tmp_path / "o.mp4", "--json", numbers,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    written = json.loads(numbers.read_text())
    assert set(written["blocks"]) == {"layer2.1"} and written["predicted"]["label"] in CATEGORIES
    assert "pixels of the video frame per video frame" in written["units"]
    again = cli(video, "--weights", checkpoint, "--out", tmp_path / "p.mp4", "--json", numbers, "--device", "cpu")
    assert again.exit_code != 0 and "--overwrite" in again.output
    wrong = cli(video, "--weights", checkpoint, "--out", tmp_path / "q.mp4", "--json", tmp_path / "n.txt")
    assert wrong.exit_code != 0 and ".json" in wrong.output


def test_cli_lists_blocks(cli, checkpoint):
    result = cli("--weights", checkpoint, "--list-blocks", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name, size in [("layer2.1", "8x8"), ("layer3.1", "4x4"), ("layer4.1", "2x2"), ("layer4_dual.1", "4x4")]:
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert size in line


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    visualize_cli.register(app)

    @app.command("other")  # a second command keeps `visualize` a named subcommand, as in `sifa`
    def other() -> None:
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["visualize", *map(str, args)])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_bad_input_gives_one_line(cli, checkpoint, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=24, width=80, height=64)
    out = tmp_path / "o.mp4"
    cases = [
        (["--point", "40"], "--point must be X,Y"),
        (["--point", "500,20"], "outside the video"),
        (["--point", "2,30"], "outside the centre crop"),
        (["--block", "layer9.9"], "no SIFA block named 'layer9.9'"),
        (["--out", tmp_path / "o.avi"], "must end with .mp4"),
        (["--out", tmp_path / "missing" / "o.mp4"], "does not exist"),
        (["--sheet", tmp_path / "s.jpg"], "must end with .png"),
        (["--panel-size", "10"], "--panel-size must be between 64 and"),
        (["--arrow-scale", "0"], "--arrow-scale must be a positive"),
    ]
    for extra, message in cases:
        args = [video, "--weights", checkpoint, "--device", "cpu"] + (["--out", out] if "--out" not in extra else []) + extra
        result = cli(*args)
        assert result.exit_code != 0, extra
        assert message in one_error_line(result), extra
    result = cli(tmp_path / "nothing.mp4", "--weights", checkpoint)
    assert "no such file" in one_error_line(result)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    result = cli(not_video, "--weights", checkpoint, "--out", out)
    assert "not a video file" in one_error_line(result)
    assert not out.exists()


def test_cli_without_clip_uses_the_example_clip(cli, checkpoint, make_video, tmp_path, monkeypatch):
    monkeypatch.setattr(visualize_cli, "EXAMPLE_CLIP", tmp_path / "examples" / "clip.mp4")
    result = cli("--offsets", "--weights", checkpoint, "--out", tmp_path / "a.mp4")
    assert "no CLIP given" in one_error_line(result)

    example = make_video("examples/clip.mp4", num_frames=20, width=64, height=64)
    monkeypatch.chdir(tmp_path)
    result = cli("--offsets", "--weights", checkpoint)
    assert result.exit_code == 0, result.output
    assert len(decoded_frames(tmp_path / f"{example.stem}_sifa.mp4")) == 16


def test_cli_without_weights_uses_the_default_model_or_says_what_is_missing(cli, make_video, tmp_path):
    video = make_video("clip.mp4", num_frames=24, width=64, height=64)
    result = cli(video, "--offsets", "--out", tmp_path / "d.mp4", "--device", "cpu")
    if load_registry().default is None:
        assert "--weights" in one_error_line(result)
    else:
        assert result.exit_code == 0, result.output
        assert len(decoded_frames(tmp_path / "d.mp4")) == load_registry().default_entry().input["frames"]  # one a frame
