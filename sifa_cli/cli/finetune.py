"""`sifa finetune`: train a SIFA model on a folder (or CSV) of labelled videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sifa_cli.cli.common import DeviceOpt, Precision, console, err_console, handle_errors, is_tty

_DATA = "Data"
_MODEL = "Model and input"
_OPT = "Optimisation"
_SWITCH = "Switches"
_RUN = "Run"


def _opt(*names: str, help: str, panel: str, **kwargs):
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False, **kwargs)


def _expert(*names: str, help: str, **kwargs):
    """An option left off the help screen (its epilog names it): set it here or as a --config key."""
    return typer.Option(*names, help=help, hidden=True, show_default=False, **kwargs)


@handle_errors
def finetune(
    data: Annotated[Optional[Path], typer.Argument(
        help="Videos: `DIR/<class>/*.mp4`, `DIR/train` + `DIR/val`, or a CSV of `path,label` rows.",
        show_default=False, metavar="DATA")] = None,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Run folder to create. [default: runs/<DATA's name>]",
                                        panel=_RUN, file_okay=False)] = None,
    resume: Annotated[Optional[Path], _opt("--resume", help="Continue the run in this folder where it stopped.",
                                           panel=_RUN, file_okay=False)] = None,
    config: Annotated[Optional[Path], _opt("--config", "-c", help="Options from a YAML or TOML file; "
                                           "command-line options override it.", panel=_RUN,
                                           dir_okay=False)] = None,
    model: Annotated[Optional[str], _opt("--model", "-m", help="Architecture (see `sifa models`). [default: "
                                         "the --init checkpoint's, else sifa_resnet_small]", panel=_MODEL)] = None,
    init: Annotated[Optional[str], _opt("--init", help="scratch, imagenet, a registry name or a checkpoint file. "
                                        "[default: the shipped model]", panel=_MODEL)] = None,
    frames: Annotated[Optional[int], _opt("--frames", help="Frames per clip. [default: 16, or the --init checkpoint's]",
                                          panel=_MODEL)] = None,
    step: Annotated[Optional[int], _opt("--step", help="Gap between frames at 30 fps (a clip covers frames x "
                                        "step / 30 s). [default: 1, or the --init checkpoint's, whose clips' time span is kept unless "
                                        "--frames or --step is given]", panel=_MODEL)] = None,
    sampling: Annotated[Optional[str], _expert("--sampling", help="dense or uniform (one frame per segment). "
                                               "[default: dense, or the --init checkpoint's]")] = None,
    size: Annotated[Optional[int], _opt("--size", help="Crop size in pixels, a multiple of 32. [default: "
                                        "224, or the --init checkpoint's]", panel=_MODEL)] = None,
    resize: Annotated[Optional[int], _expert("--resize", help="Short side before cropping. "
                                             "[default: size x 8/7, or the --init checkpoint's ratio]")] = None,
    val: Annotated[Optional[Path], _opt("--val", help="A separate validation set (folder or CSV).",
                                        panel=_DATA)] = None,
    val_fraction: Annotated[Optional[float], _opt("--val-fraction", help="Share of each class held out when "
                                                  "there is no --val. [default: 0.2]", panel=_DATA)] = None,
    min_frames: Annotated[Optional[int], _expert("--min-frames", help="Skip videos with fewer frames. [default: "
                                                 "none skipped; a video shorter than a clip has its frames spread "
                                                 "over it]")] = None,
    scan_workers: Annotated[Optional[int], _expert("--scan-workers", help="Threads checking videos before "
                                                   "training. [default: 8]")] = None,
    allow_missing_classes: Annotated[Optional[bool], _expert(
        "--allow-missing-classes", help="Train without a class whose videos are all unusable, instead of stopping.",
    )] = None,
    workers: Annotated[Optional[int], _opt("--workers", help="Data-loading processes. [default: half the CPU "
                                           "cores, at most 8]", panel=_DATA)] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", "-e", help="[default: 12]", panel=_OPT)] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", "-b", help="Clips per batch and process. "
                                              "[default: 8]", panel=_OPT)] = None,
    accumulate: Annotated[Optional[int], _opt("--accumulate", help="Batches per optimizer step. [default: 1]",
                                              panel=_OPT)] = None,
    optimizer: Annotated[Optional[str], _opt("--optimizer", help="adamw or sgd. [default: adamw]", panel=_OPT)] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Peak learning rate. [default: 0.003 adamw, 0.01 sgd]",
                                        panel=_OPT)] = None,
    min_lr: Annotated[Optional[float], _expert("--min-lr", help="Learning rate at the end of the cosine. "
                                               "[default: 0]")] = None,
    momentum: Annotated[Optional[float], _expert("--momentum", help="SGD momentum. [default: 0.9]")] = None,
    weight_decay: Annotated[Optional[float], _expert("--weight-decay", help="[default: 1e-4 sgd, 0.05 adamw]")] = None,
    warmup_epochs: Annotated[Optional[float], _expert("--warmup-epochs", help="Linear warmup before the cosine. "
                                                      "[default: 1]")] = None,
    label_smoothing: Annotated[Optional[float], _expert("--label-smoothing", help="[default: 0.1]")] = None,
    clip_grad: Annotated[Optional[float], _expert("--clip-grad", help="Max gradient norm; 0 is off. "
                                                  "[default: 0]")] = None,
    precision: Annotated[Optional[Precision], _opt("--precision", help="[default: bf16 or fp16 on GPUs, fp32 "
                                                   "on CPU]", panel=_OPT)] = None,
    sifa: Annotated[Optional[bool], _expert("--sifa/--no-sifa", help="Run the SIFA steps (default). --no-sifa "
                                            "switches every one off, leaving plain bottlenecks: the ablation.")] = None,
    freeze_backbone: Annotated[Optional[bool], _opt("--freeze-backbone/--no-freeze-backbone",
                                                    help="Train only the classifier. [default: off]",
                                                    panel=_SWITCH)] = None,
    hflip: Annotated[Optional[bool], _opt("--hflip/--no-hflip", help="Random horizontal flips. [default: off: a "
                                          "flip turns 'moving left' into 'moving right']", panel=_SWITCH)] = None,
    color_jitter: Annotated[Optional[float], _expert("--color-jitter", help="Brightness/contrast/saturation "
                                                     "strength; 0 is off. [default: 0.4]")] = None,
    min_crop_area: Annotated[Optional[float], _expert("--min-crop-area", help="Smallest random crop, as a share "
                                                      "of the frame. [default: 0.35]")] = None,
    device: DeviceOpt = None,
    seed: Annotated[Optional[int], _opt("--seed", help="Seed for the split, initialisation and augmentation. "
                                        "[default: 0]", panel=_RUN)] = None,
    patience: Annotated[Optional[int], _opt("--patience", help="Stop after this many epochs without a lower "
                                            "validation loss. [default: 0, never]", panel=_OPT)] = None,
    min_delta: Annotated[Optional[float], _expert("--min-delta", help="Smallest drop in validation loss that "
                                                  "counts as better. [default: 0]")] = None,
    log_every: Annotated[Optional[int], _expert("--log-every", help="Without a terminal, log every N batches. "
                                                "[default: 10]")] = None,
    license: Annotated[Optional[str], _expert("--license", help="Licence recorded in the checkpoints.")] = None,
) -> None:
    """Fine-tune a SIFA model on labelled videos; works the same under torchrun (data-parallel).

    Example: sifa finetune videos/ --model sifa_resnet_small --epochs 20 --out runs/mine
    """
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.engine.run_folder import RunFolder
    from sifa_cli.engine.train import train
    from sifa_cli.engine.train_config import build_config, resumed_config
    from sifa_cli.errors import InputError
    from sifa_cli.writable import check_writable

    given = dict(
        data=_absolute(data), val=_absolute(val), out=_absolute(out), model=model, init=init, frames=frames,
        step=step, sampling=sampling, size=size, resize=resize, val_fraction=val_fraction, min_frames=min_frames,
        scan_workers=scan_workers, allow_missing_classes=allow_missing_classes, workers=workers, epochs=epochs, batch_size=batch_size, accumulate=accumulate,
        optimizer=optimizer, lr=lr, min_lr=min_lr, momentum=momentum, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, clip_grad=clip_grad,
        precision=precision.value if precision is not None else None, freeze_backbone=freeze_backbone, sifa=sifa,
        hflip=hflip, color_jitter=color_jitter, min_crop_area=min_crop_area, device=device, seed=seed,
        patience=patience, min_delta=min_delta, log_every=log_every, license=license,
    )
    if resume is not None:
        if config is not None:
            raise InputError("--resume reads the run's own config.yaml; drop --config")
        if out is not None and _absolute(out) != _absolute(resume):
            raise InputError("--resume RUN continues in RUN; drop --out")
        run = RunFolder(Path(resume))
        run.check_resumable()
        run_config = resumed_config(run.config, {**given, "out": None})
        run_config.out = _absolute(resume)
        with capture_native_stderr():  # FFmpeg's own lines (loader workers, validation) stay off the terminal
            result = train(run_config, resume=True, log=_log, progress=is_tty())
    else:
        run_config = build_config(given, config)
        if run_config.data is None:
            raise InputError("give the dataset folder or CSV (sifa finetune DIR)")
        if run_config.out is None:
            from sifa_cli.engine.run_folder import default_run_folder

            run_config.out = str(default_run_folder(run_config.data).resolve())
            _log(f"run folder: {run_config.out} (--out RUN chooses another)")
        from sifa_cli.fileio import refuse_input_as_output

        init_file = run_config.init if run_config.init and Path(run_config.init).expanduser().is_file() else None
        refuse_input_as_output(Path(run_config.out), [run_config.data, run_config.val, config, init_file], "--out")
        check_writable(Path(run_config.out), "--out", folder=True)
        with capture_native_stderr():  # FFmpeg's own lines (loader workers, validation) stay off the terminal
            result = train(run_config, log=_log, progress=is_tty())
    _print_summary(result)


def _absolute(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(Path(path).expanduser().resolve())


def _log(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_summary(result) -> None:
    if not result.history or not result.is_main:
        return
    # Every epoch was logged as it ended (and is in metrics.jsonl): the summary shows the best and the last.
    best_epoch = result.best.get("epoch")
    shown = [r for r in result.history if r["epoch"] == best_epoch]
    if result.history[-1]["epoch"] != best_epoch:
        shown.append(result.history[-1])
    with_top5 = any(r.get("val_top5") is not None for r in shown)
    table = Table(title=f"Training run {result.run}", title_justify="left")
    for column in ("", "epoch", "train loss", "train top-1", "val loss", "val top-1", *(["val top-5"] if with_top5
                                                                                         else []), "objective"):
        table.add_column(column, justify="right" if column else "left")
    for record in shown:
        name = "best" if record["epoch"] == best_epoch else "last"
        top5 = [_percent(record.get("val_top5"))] if with_top5 else []
        train_loss = record.get("train_nll", record["train_loss"])
        table.add_row(name, str(record["epoch"]), f"{train_loss:.4f}", _percent(record["train_top1"]),
                      f"{record['val_loss']:.4f}", _percent(record["val_top1"]), *top5, f"{record['train_loss']:.4f}",
                      style="bold green" if name == "best" else None)
    console.print(table)
    per_class = Table()
    per_class.add_column("class")
    per_class.add_column(f"val top-1, epoch {best_epoch}", justify="right")
    for name, accuracy in result.best["val_per_class"].items():
        per_class.add_row(name, _percent(accuracy))
    console.print(per_class)
    stop = " (stopped early)" if result.stopped_early else ""
    console.print(
        f"{result.epochs_done} epochs{stop}; best validation top-1 {_percent(result.best['val_top1'])} at epoch "
        f"{best_epoch} on {result.val_clips} clips; {result.skipped} videos skipped.\n"
        f"best weights: {result.run / 'best.safetensors'}  (sifa predict VIDEO --weights "
        f"{result.run / 'best.safetensors'})",
        highlight=False, soft_wrap=True,
    )


# The options `_expert` leaves off the help screen (tests/test_cli_help.py holds this list to them).
EPILOG = (
    "More options, left off this screen: --sampling, --resize, --min-frames, --scan-workers, "
    "--allow-missing-classes, --min-lr, --momentum, --weight-decay, --warmup-epochs, --label-smoothing, "
    "--clip-grad, --no-sifa, --color-jitter, --min-crop-area, --min-delta, --log-every, --license. "
    "--config FILE takes every option as a key (`batch_size: 4`), and `offset_lr_scale`, `displacement_loss` "
    "and `translation_classes` besides; "
    "README.md, \"Every finetune option\", describes them all."
)


def register(app: typer.Typer) -> None:
    app.command("finetune", epilog=EPILOG)(finetune)
