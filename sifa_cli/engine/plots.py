"""PNG figures of a training run: loss and accuracy per epoch, and a confusion matrix.

matplotlib runs on its Agg backend, so figures render on machines without a display.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Sequence

from sifa_cli.fileio import atomic_write_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _quiet_about_glyphs(plot):
    """Class names with characters the plot font lacks (emoji, many scripts) are drawn as boxes;
    matplotlib's warning for each, with its source line, would flood the training log."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
            return plot(*args, **kwargs)

    return wrapper


def _save(fig, path: Path) -> None:
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


@_quiet_about_glyphs
def plot_curves(history: Sequence[dict], path: Path) -> None:
    """Loss (left) and accuracy (right) against the epoch.

    Training and validation loss share one definition, -log p(true class) of the predicted
    probabilities; the training objective (each head's cross-entropy summed, label smoothing) is
    on its own axis on the right, dashed. Top-5 is drawn only where it was measured (more than 5 classes)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    comparable = all("train_nll" in h for h in history)
    if comparable:
        loss_ax.plot(epochs, [h["train_nll"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss: -log p(true class)")
    loss_ax.set_title("Loss")
    objective_ax = loss_ax.twinx()
    objective_ax.plot(epochs, [h["train_loss"] for h in history], color="grey", linestyle="--", marker=".",
                      label="training objective")
    objective_ax.set_ylabel("training objective (heads summed, label smoothing)", color="grey")
    objective_ax.tick_params(axis="y", colors="grey")
    lines = loss_ax.get_legend_handles_labels()
    extra = objective_ax.get_legend_handles_labels()
    loss_ax.legend(lines[0] + extra[0], lines[1] + extra[1])
    acc_ax.plot(epochs, [100 * h["train_top1"] for h in history], marker="o", label="train top-1")
    acc_ax.plot(epochs, [100 * h["val_top1"] for h in history], marker="o", label="validation top-1")
    if all(h.get("val_top5") is not None for h in history):
        acc_ax.plot(epochs, [100 * h["val_top5"] for h in history], marker=".", linestyle="--",
                    label="validation top-5")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(0, 102)
    acc_ax.set_title("Accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


@_quiet_about_glyphs
def plot_confusion_matrix(matrix: Sequence[Sequence[int]], categories: Sequence[str], path: Path, title: str) -> None:
    """Rows: true class, columns: predicted class, cells coloured by the row's fraction.

    Counts are written into the cells while there are few enough classes to read them."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(categories)
    side = min(4 + 0.45 * n, 30)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), labels=categories, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels=categories, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                colour = "white" if fractions[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
