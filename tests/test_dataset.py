"""Fine-tuning data: layouts, CSV lists, the seeded stratified split, the pre-flight scan of real
(and deliberately broken) video files, training clips and their augmentation."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import moving_square_frames, write_motion_dataset, write_video
from sifa_cli.data.augment import Augmentation, augment_clip, random_clip_indices, swap_pairs
from sifa_cli.data.dataset import (
    ClipDataset,
    Sample,
    find_labelled_videos,
    prepare_dataset,
    read_csv_list,
    scan_videos,
    stratified_split,
    write_scan_report,
)
from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import DecodeError, InputError

SPEC = InputSpec(frames=8, step=1, sampling="dense", size=32, resize=36)


def _samples(counts: dict[str, int]) -> list[Sample]:
    return [Sample(f"/videos/{label}/{i}.mp4", label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_holds_out_each_class_and_depends_only_on_the_seed():
    samples = _samples({"a": 10, "b": 5, "c": 2, "d": 1})
    train, val = stratified_split(samples, 0.2, seed=3)
    assert Counter(s.label for s in val) == {"a": 2, "b": 1, "c": 1}  # d has one clip: it trains
    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    assert not {s.path for s in train} & {s.path for s in val}
    # Same seed, any input order: same split. Another seed: another split.
    again_train, again_val = stratified_split(list(reversed(samples)), 0.2, seed=3)
    assert {s.path for s in again_val} == {s.path for s in val}
    other = [stratified_split(samples, 0.2, seed=s)[1] for s in range(4, 10)]
    assert any({s.path for s in o} != {s.path for s in val} for o in other)
    with pytest.raises(InputError):
        stratified_split(samples, 1.5, seed=0)


def test_class_folders_csv_and_train_val_layouts(tmp_path):
    root = write_motion_dataset(tmp_path / "folders", per_class=3, num_frames=10, size=32)
    (root / "left" / "notes.txt").write_text("not a video")
    found = find_labelled_videos(root)
    assert Counter(s.label for s in found) == {"left": 3, "right": 3}
    assert all(Path(s.path).suffix == ".mp4" and Path(s.path).is_absolute() for s in found)

    listing = tmp_path / "list.csv"
    listing.write_text("path,label\n# a comment\n\nfolders/left/000.mp4,went left\n"
                       f"{root / 'right' / '000.mp4'},went right\n")
    rows = read_csv_list(listing)
    assert [(Path(r.path).name, r.label) for r in rows] == [("000.mp4", "went left"), ("000.mp4", "went right")]
    assert Path(rows[0].path) == (root / "left" / "000.mp4").resolve()
    bad = tmp_path / "bad.csv"
    bad.write_text("a.mp4,left\nb.mp4\n")
    with pytest.raises(InputError, match="line 2"):
        read_csv_list(bad)

    split_root = tmp_path / "split"
    write_motion_dataset(split_root / "train", per_class=2, num_frames=10, size=32)
    write_motion_dataset(split_root / "val", per_class=1, num_frames=10, size=32, seed=9)
    splits = prepare_dataset(split_root, min_frames=8, scan_workers=2)
    assert splits.categories == ["left", "right"]
    assert len(splits.train) == 4 and len(splits.val) == 2
    assert all("/val/" in s.path for s in splits.val)


def test_scan_reports_broken_and_short_videos_and_keeps_the_rest(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12, size=32)
    garbage = root / "left" / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "right" / "empty.mp4").write_bytes(b"")
    whole = (root / "right" / "000.mp4").read_bytes()
    (root / "right" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    write_video(root / "left" / "short.mp4", moving_square_frames("left", np.random.default_rng(1), 3, 32))

    splits = prepare_dataset(root, val_fraction=0.25, seed=0, min_frames=8, scan_workers=3)
    problems = {Path(s.path).name: s.problem for s in splits.skipped}
    assert set(problems) == {"garbage.mp4", "empty.mp4", "truncated.mp4", "short.mp4"}
    assert "only 3 frames" in problems["short.mp4"]
    assert "empty" in problems["empty.mp4"]
    assert "truncated" in problems["truncated.mp4"] or "moov" in problems["truncated.mp4"]
    kept = splits.train + splits.val
    assert len(kept) == 8 and all(s.num_frames == 12 for s in kept)
    assert Counter(s.label for s in splits.val) == {"left": 1, "right": 1}

    report = tmp_path / "report.csv"
    write_scan_report(report, splits.skipped)
    rows = list(csv.DictReader(report.open()))
    assert {Path(r["path"]).name for r in rows} == set(problems)
    assert all(r["problem"] for r in rows)


def test_scan_needs_two_usable_classes(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=12, size=32)
    for path in (root / "right").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(InputError, match="at least 2 classes"):
        prepare_dataset(root, min_frames=8, scan_workers=2)


def test_training_clips_are_reproducible_per_epoch_and_evaluation_clips_fixed(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=16, size=48)
    usable, skipped = scan_videos(find_labelled_videos(root), min_frames=8, workers=2)
    assert not skipped
    augmentation = Augmentation(color_jitter=0.3)
    train = ClipDataset(usable, ["left", "right"], SPEC, augmentation, seed=5)
    clip, label = train[1]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    assert label == 0 and train[3][1] == 1
    assert torch.equal(train[1][0], clip)  # same (seed, epoch, index): same clip
    train.set_epoch(1)
    assert not torch.equal(train[1][0], clip)  # a new epoch draws new crops
    evaluation = ClipDataset(usable, ["left", "right"], SPEC)
    assert torch.equal(evaluation[0][0], evaluation[0][0])
    assert evaluation[0][0].shape == (3, 8, 32, 32)


def test_a_file_that_breaks_after_the_scan_is_replaced_not_fatal(tmp_path, capsys):
    root = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=12, size=32)
    usable, _ = scan_videos(find_labelled_videos(root), min_frames=8, workers=2)
    Path(usable[0].path).write_bytes(b"gone bad")
    dataset = ClipDataset(usable, ["left", "right"], SPEC, Augmentation(), seed=0)
    clip, label = dataset[0]
    assert clip.shape == (3, 8, 32, 32)
    assert label == 0  # the next sample, also "left", stands in
    assert "warning: could not read" in capsys.readouterr().err


def test_horizontal_flip_only_when_asked():
    frame = np.zeros((4, 32, 32, 3), np.uint8)
    frame[:, :, :8] = 255  # bright on the left
    whole_frame = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0)
    rng = np.random.default_rng(0)
    unflipped = [augment_clip(frame, 32, Augmentation(**whole_frame), rng)[0] for _ in range(40)]
    assert all(np.array_equal(out, frame) for out in unflipped)
    flipped = [augment_clip(frame, 32, Augmentation(**whole_frame, hflip=True), rng)[0] for _ in range(40)]
    mirrored = sum(np.array_equal(out, frame[:, :, ::-1]) for out in flipped)
    assert 8 < mirrored < 32 and mirrored + sum(np.array_equal(o, frame) for o in flipped) == 40


def _square_travel(clip: torch.Tensor) -> tuple[float, float]:
    """(x, y) the bright square's centre moves from the first frame to the last, in pixels."""
    brightness = clip.mean(dim=0)  # T,H,W
    centres = []
    for frame in (brightness[0], brightness[-1]):
        ys, xs = torch.nonzero(frame > frame.mean() + frame.std(), as_tuple=True)
        centres.append((xs.float().mean().item(), ys.float().mean().item()))
    return centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]


def test_mirrored_and_reversed_clips_carry_the_swapped_label(tmp_path):
    """Real decoded clips of squares moving four ways; with flips and reversal the label each clip is
    given must be the way its square really moves in the tensor, and both transforms must occur."""
    directions = ("left", "right", "up", "down")
    root = write_motion_dataset(tmp_path / "data", per_class=2, directions=directions, num_frames=12, size=48)
    usable, _ = scan_videos(find_labelled_videos(root), min_frames=8, workers=2)
    whole = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0)
    augmentation = Augmentation(**whole, hflip=True, reverse=True, hflip_swaps=(("left", "right"),),
                                reverse_swaps=(("left", "right"), ("up", "down")))
    dataset = ClipDataset(usable, list(directions), SPEC, augmentation, seed=1)
    changed = Counter()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index, sample in enumerate(dataset.samples):
            clip, label = dataset[index]
            dx, dy = _square_travel(clip)
            seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
            assert directions[label] == seen, (sample.label, epoch)
            changed[(sample.label, seen)] += 1
    assert changed[("left", "right")] and changed[("left", "left")] and changed[("up", "down")] and changed[("up", "up")]
    assert not changed[("left", "up")]  # never swapped where no pair says so

    plain = ClipDataset(usable, list(directions), SPEC, Augmentation(**whole), seed=1)
    assert [plain[i][1] for i in range(len(usable))] == [directions.index(s.label) for s in usable]


def test_swapped_classes_are_checked():
    with pytest.raises(InputError, match="'sideways', not a class of the data"):
        ClipDataset([], ["left", "right"], SPEC, Augmentation(hflip=True, hflip_swaps=(("left", "sideways"),)))
    with pytest.raises(InputError, match="names 'left' twice"):
        ClipDataset([], ["left", "right", "up"], SPEC,
                    Augmentation(reverse=True, reverse_swaps=(("left", "right"), ("left", "up"))))
    assert swap_pairs(" pan left = pan right ,zoom in=zoom out", "x") == [("pan left", "pan right"),
                                                                           ("zoom in", "zoom out")]
    for bad in ("pan left", "a=a", "a=b=c", "=b"):
        with pytest.raises(InputError, match="expected pairs of two different classes"):
            swap_pairs(bad, "hflip_swaps")


def test_random_clip_indices():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        dense = random_clip_indices(40, 8, 2, "dense", rng)
        assert np.all(np.diff(dense) == 2) and dense[0] >= 0 and dense[-1] < 40
        starts.add(int(dense[0]))
        uniform = random_clip_indices(40, 8, 1, "uniform", rng)
        assert np.array_equal(uniform // 5, np.arange(8))  # one frame inside each fifth-of-40 segment
    assert len(starts) > 10
    short = random_clip_indices(5, 8, 1, "dense", rng)  # spread over the whole video, never looped
    assert short.tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    assert np.diff(random_clip_indices(100, 4, 1.6, "dense", rng)).tolist() == [2, 1, 2]


def test_csv_listing_a_video_twice(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=5, num_frames=10, size=32)
    rows = [f"data/{label}/{i:03d}.mp4,{label}" for label in ("left", "right") for i in range(5)]
    # The same files again, spelt differently: absolute, and through "./" and "..".
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join([*rows, f"{root / 'left' / '000.mp4'},left", "./data/right/../right/004.mp4,right"]))
    notes: list[str] = []
    samples = read_csv_list(listing, notes.append)
    assert len(samples) == 10 and len({s.path for s in samples}) == 10
    assert notes == [f"warning: {listing}: 2 rows repeat a video listed earlier with the same label; each video "
                     f"is used once (e.g. line 11 repeats line 1: {(root / 'left' / '000.mp4').resolve()})"]
    splits = prepare_dataset(listing, val_fraction=0.4, min_frames=8, scan_workers=2, log=notes.append)
    assert not {s.path for s in splits.train} & {s.path for s in splits.val}  # no leak into validation
    assert len(splits.train) + len(splits.val) == 10

    conflicting = tmp_path / "conflict.csv"
    conflicting.write_text("\n".join([*rows, f"{root / 'left' / '003.mp4'},right"]))
    with pytest.raises(InputError) as caught:
        read_csv_list(conflicting)
    assert str(caught.value) == (f"{conflicting}, line 11: {(root / 'left' / '003.mp4').resolve()} is listed with "
                                 "two labels, 'left' (line 4) and 'right'; give each video one label")


def test_a_validation_video_that_breaks_is_never_replaced(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=2, num_frames=12, size=32)
    usable, _ = scan_videos(find_labelled_videos(root), min_frames=8, workers=2)
    Path(usable[0].path).write_bytes(b"gone bad")
    evaluation = ClipDataset(usable, ["left", "right"], SPEC)
    with pytest.raises(DecodeError, match=f"a validation video can no longer be read \\({usable[0].path}"):
        evaluation[0]
    assert evaluation[1][1] == 0


def test_videos_outside_the_class_folders_are_named_not_dropped_silently(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=1, num_frames=6)
    (root / "stray.mp4").write_bytes((root / "left" / "000.mp4").read_bytes())
    said: list[str] = []
    samples = find_labelled_videos(root, log=said.append)
    assert sorted(Path(s.path).name for s in samples) == ["000.mp4", "000.mp4"]
    assert len(said) == 1 and "1 video directly in it, outside any class folder, is left out" in said[0]
    assert "stray.mp4" in said[0]
