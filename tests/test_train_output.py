"""What `sifa finetune` prints and plots per epoch: comparable losses, top-5 only where it means
something, and where a slow epoch's time went."""

from __future__ import annotations

from sifa_cli.engine.plots import plot_curves
from sifa_cli.engine.train_metrics import epoch_line, slow_epoch_note


def record(epoch, clips_per_s, seconds, wait, first, val_seconds=2.0, top5=None, **extra):
    return {"epoch": epoch, "train_loss": 2.5, "train_nll": 1.1, "train_top1": 0.5, "val_loss": 0.9, "val_top1": 0.6,
            "val_top5": top5, "lr": 0.001, "train_clips_per_s": clips_per_s, "epoch_seconds": seconds,
            "data_wait_seconds": wait, "first_batch_seconds": first, "val_seconds": val_seconds, **extra}


def test_epoch_line_reports_one_loss_definition_and_top5_only_when_measured():
    line = epoch_line(record(1, 20.0, 16.0, 3.0, 0.5), 5, improved=True)
    assert "train loss 1.1000" in line and "val loss 0.9000" in line and "objective 2.5000" in line
    assert "top-5" not in line and "(best)" in line and "waiting for data 3 s" in line
    assert "top-5 95.0%" in epoch_line(record(1, 20.0, 16.0, 3.0, 0.5, top5=0.95), 5, improved=False)
    old = {k: v for k, v in record(1, 20.0, 16.0, 3.0, 0.5).items()
           if k not in ("train_nll", "data_wait_seconds", "first_batch_seconds", "val_seconds")}
    assert "train loss 2.5000" in epoch_line(old, 5, improved=False)  # a run from before train_nll existed


def test_slow_epoch_note_says_where_the_time_went():
    slow, fast = record(1, 3.3, 103.0, 80.0, 30.0, val_seconds=6.0), record(2, 22.7, 16.0, 2.0, 0.3)
    note = slow_epoch_note(slow, fast)
    assert note.startswith("note: epoch 1 trained 6.9x slower than epoch 2: 83 s more, 78 s of it waiting for data")
    assert "first batch took 30.0 s" in note and "mostly waiting for data" in note
    model_bound = slow_epoch_note(record(1, 3.3, 103.0, 3.0, 1.0, val_seconds=6.0), fast)
    assert "mostly in the model" in model_bound
    assert slow_epoch_note(record(1, 15.0, 25.0, 2.0, 0.5), fast) is None  # not much slower: nothing to say


def test_slow_epoch_note_compares_first_batches_in_words():
    # the old note read "its first batch took 0.4 s, -0.2 s": a bare signed difference
    note = slow_epoch_note(record(1, 3.0, 60.0, 10.0, 0.4), record(2, 20.0, 10.0, 1.0, 0.6))
    assert "its first batch took 0.4 s, epoch 2's 0.6 s" in note and "-0.2 s" not in note


def test_curves_with_and_without_top5_and_old_histories(tmp_path):
    history = [record(e, 20.0, 16.0, 1.0, 0.2, top5=0.9) for e in (1, 2, 3)]
    plot_curves(history, tmp_path / "a.png")
    old = [{k: v for k, v in r.items() if k != "train_nll"} | {"val_top5": None} for r in history]
    plot_curves(old, tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
