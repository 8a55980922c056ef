"""Fine-tune a SIFA model on labelled videos: the training loop, validation, the run folder, resume,
and data-parallel training under torchrun.

One epoch = one pass over the training clips, then validation on the held-out clips (centre clip,
centre crop, the same pixels `sifa predict` sees, scored by `predict_proba`). After every epoch the
run folder gets, each written atomically (a temporary file renamed into place):

    best.safetensors / last.safetensors   model + metadata, usable by `sifa predict --weights`
                                          (best: the lowest validation loss, see `is_better`)
    train_state.pt                        everything `--resume` needs to continue exactly
    metrics.jsonl, curves.png, confusion_matrix.png

and at the start: config.yaml (the effective options), dataset.json (the scanned split) and
scan_report.csv (videos left out and why). A run killed at any moment loses at most the epoch in
progress. Under torchrun every process trains on its shard of each epoch, metrics are summed
across processes, and only rank 0 writes.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import random
import shlex
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from sifa_cli import __version__
from sifa_cli.fileio import atomic_write_path, lock_output
from sifa_cli.data.augment import Augmentation
from sifa_cli.data.dataset import (
    ClipDataset,
    DatasetRefused,
    DatasetSplits,
    describe_clip_lengths,
    prepare_dataset,
    write_scan_report,
)
from sifa_cli.data.spec import InputSpec
from sifa_cli.engine.device import autocast, resolve_device
from sifa_cli.engine.train_config import (
    DEFAULT_LR,
    DEFAULT_MODEL,
    DEFAULT_WEIGHT_DECAY,
    TrainConfig,
    write_config_yaml,
)
from sifa_cli.errors import InputError, ModelError, SifaError
from sifa_cli.models import create_model, head_probabilities, predict_proba

STATE_FORMAT = "sifa-train-state/1"
# Top-k accuracy reported besides top-1, only for models with more classes than this.
TOP_K = 5
# Parameters of these modules form the classifier; --freeze-backbone trains only them.
HEAD_MODULES = ("fc", "fc_dual")

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def get_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup from base_lr/warmup_steps
    to base_lr over `warmup_steps` steps, then a cosine decay that reaches min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# The run folder


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.best = self.root / "best.safetensors"
        self.last = self.root / "last.safetensors"
        self.state = self.root / "train_state.pt"
        self.config = self.root / "config.yaml"
        self.dataset = self.root / "dataset.json"
        self.scan_report = self.root / "scan_report.csv"
        self.metrics = self.root / "metrics.jsonl"
        self.curves = self.root / "curves.png"
        self.confusion = self.root / "confusion_matrix.png"

    def check_new(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {self.root} exists and is not a folder")
        if self.config.exists():
            raise InputError(f"{self.root} already holds a training run; continue it with --resume {self.root} "
                             "or choose another --out")
        # a run that could not start leaves its scan report, and may be tried again in the same folder
        if self.root.is_dir() and any(p.name != self.scan_report.name for p in self.root.iterdir()):
            raise InputError(f"--out {self.root} exists and is not empty; choose a new folder")

    def check_resumable(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"--resume {self.root}: no such run folder")
        for needed in (self.config, self.dataset):
            if not needed.is_file():
                raise InputError(f"--resume {self.root}: {needed.name} is missing, so this is not a sifa run folder")

    def finished_epochs(self) -> int:
        """Epochs metrics.jsonl records (0 when it is missing or unreadable)."""
        try:
            return sum(1 for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError):
            return 0

    def check_nothing_finished(self, data: str = "DATA") -> None:
        """A run folder without train_state.pt may only be resumed when no epoch of it finished
        (it was stopped during its first epoch); otherwise starting over would overwrite the
        finished epochs' checkpoints and metrics."""
        epochs = self.finished_epochs()
        checkpoints = [path.name for path in (self.best, self.last) if path.exists()]
        if not epochs and not checkpoints:
            return
        recorded = (f"{self.metrics.name} records {epochs} finished epoch(s)" if epochs
                    else f"it holds {' and '.join(checkpoints)}")
        weights = self.best if self.best.exists() else self.last if self.last.exists() else None
        advice = (f"to train on from its weights, start a new run: sifa finetune {data} "
                  f"--init {shlex.quote(str(weights))} --out NEW_RUN" if weights
                  else "start a new run with another --out")
        raise InputError(f"--resume {self.root}: {self.state.name} is missing, so training cannot continue exactly "
                         f"where it stopped ({recorded}); {advice}")

    def remove_stale_temporaries(self) -> None:
        """Half-written files of a process that was killed while saving."""
        for path in self.root.glob(".*.tmp*"):
            path.unlink(missing_ok=True)

    def write_metrics(self, history: list[dict]) -> None:
        with atomic_write_path(self.metrics) as tmp:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in history), encoding="utf-8")


DEFAULT_RUNS_FOLDER = Path("runs")


def default_run_folder(data: str) -> Path:
    """`--out` left unset: runs/<the data folder's (or CSV file's) name>, numbered -2, -3, ... when
    that exists already (unless it holds only the scan report of a run that could not start)."""
    source = Path(data)
    name = (source.stem if source.suffix.lower() in (".csv", ".txt") else source.name) or "run"
    for number in range(1, 10_000):
        candidate = DEFAULT_RUNS_FOLDER / (name if number == 1 else f"{name}-{number}")
        try:
            RunFolder(candidate).check_new()
        except InputError:
            continue
        return candidate
    raise InputError(f"{DEFAULT_RUNS_FOLDER / name}: too many run folders of that name; choose one with --out")


def save_training_state(path: Path, state: dict) -> None:
    """torch.save to a temporary file, flushed to disk, then renamed over the old state."""
    buffer = io.BytesIO()  # torch's own file writer reports a full disk as a C++ error naming no file
    torch.save(state, buffer)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())


def load_training_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports damage as many exception types
        raise InputError(f"cannot read the training state {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a sifa training state")
    return state


def check_split_files(splits: DatasetSplits, run: RunFolder) -> None:
    """On resume: every video of the recorded split must still be there and readable. Training on
    without some (the loader replaces an unreadable clip by the next one) would silently change the
    data the run learns from and the validation set its metrics are compared on."""
    missing = [sample.path for sample in (*splits.train, *splits.val)
               if not (os.path.isfile(sample.path) and os.access(sample.path, os.R_OK))]
    if not missing:
        return
    gone = set(missing)
    total = len(splits.train) + len(splits.val)
    in_val = sum(sample.path in gone for sample in splits.val)
    left = {sample.label for sample in (*splits.train, *splits.val) if sample.path not in gone}
    emptied = [name for name in splits.categories if name not in left]
    classes = f"; class {', '.join(repr(c) for c in emptied)} has no video left" if emptied else ""
    weights = f" (--init {run.best} starts it from this run's weights)" if run.best.exists() else ""
    raise InputError(
        f"--resume {run.root}: {len(missing)} of the {total} videos of this run's split ({run.dataset.name}; "
        f"{in_val} of them for validation) are missing or unreadable, e.g. {missing[0]}{classes}; put them back "
        f"to resume, or start a new run on the data as it is now{weights}")


# ---------------------------------------------------------------------------------------------
# Devices, precision, processes


@dataclass
class Distributed:
    """This process's place among torchrun's processes (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, tensor: Tensor) -> Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def start_distributed(device: torch.device) -> Distributed:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL for CUDA devices, gloo otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


def training_device(requested: str) -> torch.device:
    """`--device` as `sifa predict` reads it, except that under torchrun each process takes the
    GPU of its LOCAL_RANK unless a specific one was named."""
    device = resolve_device(requested)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and ":" not in requested:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    elif device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """fp32, bf16 or fp16. auto: bf16 on GPUs that support it, fp16 on other CUDA GPUs, fp32
    elsewhere (CPU bf16 autocast is often slower than fp32 and fp16 needs a loss scaler on CUDA)."""
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and device.type != "cuda":
        raise InputError(f"--precision fp16 trains only on CUDA GPUs (this run uses {device.type}); use bf16 or fp32")
    if requested == "bf16" and device.type == "mps":
        raise InputError("--precision bf16 is not supported on MPS; use fp32")
    return requested


def default_workers() -> int:
    return min(8, max(0, (os.cpu_count() or 2) // 2))


# ---------------------------------------------------------------------------------------------
# The starting model


@dataclass
class StartingPoint:
    model: nn.Module
    arch: str
    arch_kwargs: dict
    description: str  # what the weights started from, for the checkpoint's "source"


def checkpoint_arch_kwargs(arch: str, base: dict, frames: int, size: int) -> dict:
    """create_model arguments besides num_classes: the clip length, and the image size for models
    whose layout depends on it (SIFA-Transformer's attention windows)."""
    kwargs = {**base, "clip_length": frames}
    with torch.device("meta"):  # costs no memory: only the class is wanted
        model_class = type(create_model(arch, num_classes=1, **kwargs))
    if "img_size" in inspect.signature(model_class.__init__).parameters:
        kwargs["img_size"] = size
    return kwargs


def locate_init(init: str) -> tuple[Optional[Any], Optional[Path]]:
    """(registry entry or None, local file or None) for an --init value; a classifier entry's file
    is fetched, an ImageNet entry's is left to `load_init_state_dict`."""
    from sifa_cli.weights.checkpoint import weights_target
    from sifa_cli.weights.download import fetch
    from sifa_cli.weights.manifest import KIND_INIT, load_registry

    target = weights_target(init, load_registry())
    if isinstance(target, Path):
        return None, target
    return target, (None if target.kind == KIND_INIT else fetch(target))


def read_init_checkpoint(path: Path, arch: Optional[str]) -> tuple[dict, dict]:
    """(state dict, metadata) of a starting checkpoint: ours (safetensors) or a reference .pth."""
    from sifa_cli.weights.checkpoint import is_safetensors_file, load_checkpoint, load_torch_state_dict
    from sifa_cli.weights.convert import reference_meta

    if is_safetensors_file(path):
        return load_checkpoint(path)
    state = load_torch_state_dict(path)
    return state, reference_meta(state, arch=arch, source=f"reference checkpoint {path.name}")


def _single_threaded_worker(_worker_id: int) -> None:
    """Loader workers decode one clip each: OpenCV's own thread pool in every worker would
    oversubscribe the cores (torch already runs single-threaded in workers)."""
    import cv2

    cv2.setNumThreads(1)


def default_init(model: Optional[str], log: Log) -> str:
    """--init left unset: start from the shipped default model (motion-pretrained: its backbone
    is kept, its classifier re-initialised for the dataset's classes) when --model is unset or the
    same architecture; otherwise from scratch, and say so."""
    from sifa_cli.weights.manifest import load_registry

    registry = load_registry()
    if registry.default is None:
        return "scratch"
    entry = registry.default_entry()
    if model is None or model == entry.arch:
        return entry.name
    log(f"--model {model} differs from the default model's {entry.arch}: training from scratch "
        f"(--init NAME|FILE to start from other weights)")
    return "scratch"


def init_arch_and_input(init: str) -> tuple[Optional[str], dict]:
    """The architecture a starting point fixes (None for scratch/imagenet) and the input spec it
    was trained with ({} when unknown)."""
    if init in ("scratch", "imagenet"):
        return None, {}
    from sifa_cli.weights.checkpoint import is_safetensors_file, read_checkpoint_meta
    from sifa_cli.weights.manifest import KIND_INIT

    entry, path = locate_init(init)
    if entry is not None:
        return entry.arch, ({} if entry.kind == KIND_INIT else dict(entry.input))
    if is_safetensors_file(path):
        meta = read_checkpoint_meta(path)
        return meta["arch"], dict(meta.get("input") or {})
    _, meta = read_init_checkpoint(path, None)
    return meta["arch"], {}


def build_starting_model(config: TrainConfig, categories: list[str], spec: InputSpec, log: Log) -> StartingPoint:
    """The model to fine-tune, with weights from scratch, ImageNet (inflated), or a checkpoint whose
    classifier is kept when its categories are ours and re-initialised otherwise."""
    from sifa_cli.models.inflate import load_imagenet_weights
    from sifa_cli.weights.checkpoint import load_init_state_dict, load_strict
    from sifa_cli.weights.manifest import KIND_INIT, load_registry

    arch = config.model
    sifa_off = {} if config.sifa else {"sifa": False}
    kwargs = checkpoint_arch_kwargs(arch, sifa_off, spec.frames, spec.size)
    num_classes = len(categories)
    if config.init == "scratch":
        return StartingPoint(create_model(arch, num_classes=num_classes, **kwargs), arch, kwargs, "random initialisation")

    init_name = config.init
    if init_name == "imagenet":
        matches = [e.name for e in load_registry() if e.kind == KIND_INIT and e.arch == arch]
        if not matches:
            raise InputError(f"--init imagenet: no ImageNet initialisation is registered for {arch}; "
                             "see `sifa weights list`")
        init_name = matches[0]
    entry, path = locate_init(init_name)
    if entry is not None and entry.kind == KIND_INIT:
        image_state, entry = load_init_state_dict(init_name)
        model = create_model(arch, num_classes=num_classes, **kwargs)
        fresh = load_imagenet_weights(model, image_state)
        log(f"initialised from ImageNet weights '{entry.name}' (inflated; {len(fresh)} tensors keep their fresh init)")
        return StartingPoint(model, arch, kwargs, f"ImageNet weights '{entry.name}'")

    state, meta = read_init_checkpoint(path, arch)
    if meta["arch"] != arch:
        raise InputError(f"--init {config.init} holds a {meta['arch']} model, not --model {arch}")
    recorded = {k: v for k, v in dict(meta.get("arch_kwargs") or {}).items() if k != "sifa"}
    kwargs = checkpoint_arch_kwargs(arch, {**recorded, **sifa_off}, spec.frames, spec.size)
    model = create_model(arch, num_classes=len(meta["categories"]), **kwargs)
    load_strict(model, state, str(path), arch)
    what = f"'{entry.name}'" if entry is not None else str(path)
    if list(meta["categories"]) != list(categories):
        model.reset_classifier(num_classes)
        log(f"initialised from {what}; its {len(meta['categories'])} classes are not the dataset's "
            f"{num_classes}, so the classifier starts afresh")
    else:
        log(f"initialised from {what} (same classes: the classifier is kept)")
    return StartingPoint(model, arch, kwargs, f"checkpoint {what}")


# ---------------------------------------------------------------------------------------------
# Optimisation pieces


def head_parameter(name: str) -> bool:
    return name.split(".", 1)[0] in HEAD_MODULES


def freeze_backbone(model: nn.Module) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(head_parameter(name))


def set_train_mode(model: nn.Module, backbone_frozen: bool) -> None:
    """Training mode, except that a frozen backbone keeps its normalisation statistics fixed."""
    model.train()
    if backbone_frozen:
        for name, module in model.named_modules():
            if name and not head_parameter(name) and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def check_finite(model: nn.Module, train_loss: float, val_loss: float, epoch: int, lr: float,
                 best_checkpoint: Optional[Path], best_epoch: Optional[int]) -> None:
    """Stop a run whose loss or weights stopped being finite numbers, before anything of that epoch
    is saved: the checkpoints and training state of the last good epoch stay as they were."""
    if not math.isfinite(train_loss):
        bad = f"the training loss is {train_loss}"
    elif not math.isfinite(val_loss):
        bad = f"the validation loss is {val_loss}"
    else:
        broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if not broken:
            return
        bad = f"{len(broken)} parameter tensors hold NaN or infinite values (first: {broken[0]})"
    kept = (f"the last good checkpoint, from epoch {best_epoch}, is {best_checkpoint}" if best_checkpoint
            else "no epoch finished before, so there is no checkpoint")
    raise ModelError(f"training diverged in epoch {epoch}: {bad}; nothing of this epoch was saved and {kept}. "
                     f"Try a lower --lr (this run uses {lr:g})")


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW; biases and normalisation weights get no weight decay. The SIFA
    offset convolutions learn at `config.offset_lr_scale` times the rate (the group's `lr_scale`)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            offset = config.offset_lr_scale != 1.0 and ".conv_offset." in f".{name}"
            groups.setdefault((parameter.dim() > 1, offset), []).append(parameter)
    param_groups = [{"params": params, "weight_decay": weight_decay if decays else 0.0,
                     "lr_scale": config.offset_lr_scale if offset else 1.0}
                    for (decays, offset), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    for group in param_groups:
        group["lr"] = lr * group["lr_scale"]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    return torch.optim.SGD(param_groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)


def classification_loss(outputs, labels: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy of every head, summed (SIFA-Net trains its main and dual heads together)."""
    heads = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return sum(F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing) for logits in heads)


# ---------------------------------------------------------------------------------------------
# RNG state, for an exact resume


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class EpochMetrics:
    loss: float
    top1: float
    top5: Optional[float]  # None with TOP_K classes or fewer, where it is always 100%
    confusion: list[list[int]]
    clips: int

    def per_class(self, categories: list[str]) -> dict[str, Optional[float]]:
        result = {}
        for i, name in enumerate(categories):
            total = sum(self.confusion[i])
            result[name] = self.confusion[i][i] / total if total else None
        return result


@dataclass
class TrainResult:
    run: Path
    categories: list[str]
    history: list[dict]
    best: dict
    epochs_done: int
    stopped_early: bool
    skipped: int
    train_clips: int
    val_clips: int
    is_main: bool = True  # False on torchrun's other processes, which write and print nothing


def is_better(record: dict, best: dict, min_delta: float = 0.0) -> bool:
    """Whether an epoch beats the best so far: a lower validation loss (by more than min_delta).

    The loss, not top-1: on the few dozen validation clips of a small dataset top-1 moves in steps
    of several per cent and picked early, worse epochs in the sweep behind the default recipe (README,
    "How far the camera-pretrained start gets you"); the loss moves smoothly. Equal losses go to the
    better top-1.
    """
    if not best:
        return True
    if record["val_loss"] < best["val_loss"] - min_delta:
        return True
    return record["val_loss"] == best["val_loss"] and record["val_top1"] > best["val_top1"]


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    """One log line per epoch: comparable train and validation losses, accuracy, speed and timing."""
    top5 = f" top-{TOP_K} {100 * record['val_top5']:.1f}%" if record.get("val_top5") is not None else ""
    train_loss = record.get("train_nll", record["train_loss"])
    timing = f"{record['train_clips_per_s']:.1f} clips/s, {record['epoch_seconds']:.0f} s"
    if "data_wait_seconds" in record:
        timing += f" (waiting for data {record['data_wait_seconds']:.0f} s, validation {record['val_seconds']:.0f} s)"
    return (f"epoch {record['epoch']}/{epochs}: train loss {train_loss:.4f} top-1 {100 * record['train_top1']:.1f}% | "
            f"val loss {record['val_loss']:.4f} top-1 {100 * record['val_top1']:.1f}%{top5}"
            f"{' (best)' if improved else ''} | objective {record['train_loss']:.4f} | {timing}")


def slow_epoch_note(previous: dict, current: dict) -> Optional[str]:
    """When an epoch trained at under half the next one's speed, where its extra time went."""
    if not previous.get("train_clips_per_s") or current["train_clips_per_s"] < 2 * previous["train_clips_per_s"]:
        return None
    if "data_wait_seconds" not in previous:
        return None
    ratio = current["train_clips_per_s"] / previous["train_clips_per_s"]
    train_time = {r["epoch"]: r["epoch_seconds"] - r.get("val_seconds", 0.0) for r in (previous, current)}
    extra = train_time[previous["epoch"]] - train_time[current["epoch"]]
    extra_wait = previous["data_wait_seconds"] - current["data_wait_seconds"]
    cause = ("mostly waiting for data (decoding files the first time, loader start-up)" if extra_wait > extra / 2
             else "mostly in the model (one-time set-up of its kernels, or other programs busy on the same cores)")
    return (f"note: epoch {previous['epoch']} trained {ratio:.1f}x slower than epoch {current['epoch']}: "
            f"{extra:.0f} s more, {max(extra_wait, 0):.0f} s of it waiting for data (its first batch took "
            f"{previous['first_batch_seconds']:.1f} s, epoch {current['epoch']}'s "
            f"{current['first_batch_seconds']:.1f} s); {cause}")


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False, log: Log = _stderr_log, progress: bool = False):
        self.config = config
        self.resume = resume
        self.progress = progress
        self.device = training_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.dist = start_distributed(self.device)
        self._log = log
        self.run = RunFolder(Path(config.out))

    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._log(message)

    # -- setup ----------------------------------------------------------------------------------

    def prepare_run_folder(self) -> Optional[dict]:
        """Check the folder; on resume, return the saved training state (None: none saved yet)."""
        if self.resume:
            self.run.check_resumable()
            if self.dist.is_main:
                self.run.remove_stale_temporaries()
            if self.run.state.is_file():
                return load_training_state(self.run.state)
            # killed during its first epoch: start that epoch again
            data = [shlex.quote(p) for p in (self.config.data, self.config.val) if p]
            self.run.check_nothing_finished(" --val ".join(data) or "DATA")
            return None
        if self.dist.is_main:
            self.run.check_new()
        self.dist.barrier()
        return None

    def check_same_processes(self, state: dict) -> None:
        """The learning-rate schedule counts optimizer steps, and each process steps once per batch of
        its shard: another number of processes would re-plan the steps per epoch, so the cosine would
        no longer end where the run was set to end. A resume is exact only with the same number."""
        recorded = state.get("processes")
        if recorded is None or recorded == self.dist.world_size:
            return
        how = (f"torchrun --nproc_per_node {recorded} -m sifa_cli.cli.main finetune --resume {self.run.root}"
               if recorded > 1 else f"sifa finetune --resume {self.run.root} (without torchrun)")
        raise InputError(f"--resume {self.run.root}: this run trained on {recorded} process(es), this resume has "
                         f"{self.dist.world_size}; its learning-rate schedule is planned in steps per epoch for "
                         f"{recorded}, so resume it the same way: {how}")

    def load_dataset(self) -> DatasetSplits:
        if self.resume:
            splits = DatasetSplits.load(self.run.dataset)
            check_split_files(splits, self.run)
            return splits
        config = self.config
        splits = None
        if self.dist.is_main:
            if config.data is None:
                raise InputError("give the dataset: a folder of class folders, a root with train/ and val/, or a CSV")
            try:
                # Every video is used by default: one shorter than a clip has its frames spread over it.
                splits = prepare_dataset(
                    Path(config.data), Path(config.val) if config.val else None, val_fraction=config.val_fraction,
                    seed=config.seed, min_frames=config.min_frames or 1, scan_workers=config.scan_workers,
                    progress=self.progress, allow_missing_classes=config.allow_missing_classes, log=self.log,
                )
            except DatasetRefused as exc:
                if not exc.skipped:
                    raise
                # The run cannot start; the report of why each video was left out is kept (see `train`).
                self.run.root.mkdir(parents=True, exist_ok=True)
                write_scan_report(self.run.scan_report, exc.skipped)
                raise InputError(f"{exc} (every video left out, and why: {self.run.scan_report})") from None
            self.run.root.mkdir(parents=True, exist_ok=True)
            write_scan_report(self.run.scan_report, splits.skipped)
            splits.save(self.run.dataset)
        doc = self.dist.broadcast_object(splits.to_json() if splits is not None else None)
        return DatasetSplits.from_json(doc)

    def resolve_model_and_input(self) -> InputSpec:
        """Fill the options left unset from the starting checkpoint or the defaults."""
        config = self.config
        if config.init is None:
            config.init = default_init(config.model, self.log)
        fixed_arch, recorded = init_arch_and_input(config.init)
        if config.model is None:
            config.model = fixed_arch or DEFAULT_MODEL
        elif fixed_arch is not None and fixed_arch != config.model:
            raise InputError(f"--init {config.init} holds a {fixed_arch} model, not --model {config.model}")
        from sifa_cli.models import list_models

        if config.model not in list_models():
            raise ModelError(f"unknown model '{config.model}'; known models: {', '.join(list_models())}")
        defaults = InputSpec()
        config.frames = config.frames or int(recorded.get("frames", defaults.frames))
        config.step = config.step or int(recorded.get("step", defaults.step))
        config.sampling = config.sampling or str(recorded.get("sampling", defaults.sampling))
        config.size = config.size or int(recorded.get("size", defaults.size))
        if config.resize is None:
            recorded_ratio = recorded.get("resize", defaults.resize) / recorded.get("size", defaults.size)
            config.resize = int(round(config.size * recorded_ratio))
        config.lr = config.lr or DEFAULT_LR[config.optimizer]
        if config.weight_decay is None:
            config.weight_decay = DEFAULT_WEIGHT_DECAY[config.optimizer]
        if config.workers is None:
            config.workers = default_workers()
        if config.size % 32 or config.resize < config.size:
            raise InputError(f"size {config.size} must be a multiple of 32 and resize {config.resize} at least that")
        mean = recorded.get("mean", defaults.mean)
        std = recorded.get("std", defaults.std)
        return InputSpec(frames=config.frames, step=config.step, sampling=config.sampling, size=config.size,
                         resize=config.resize, mean=tuple(mean), std=tuple(std))

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config = self.config
        state = self.prepare_run_folder()
        if state is not None:
            self.check_same_processes(state)
        spec = InputSpec.from_meta(state["input"]) if state is not None else self.resolve_model_and_input()
        splits = self.load_dataset()
        categories = splits.categories
        if self.dist.is_main:
            write_config_yaml(config, self.run.config)
        self._describe_start(splits, spec)

        torch.manual_seed(config.seed)
        if state is not None:
            model = create_model(state["arch"], num_classes=len(categories), **state["arch_kwargs"])
            model.load_state_dict(state["model"])
            start = StartingPoint(model, state["arch"], state["arch_kwargs"], state["init_description"])
        else:  # a new run, or one killed during its first epoch: start from the same init
            start = build_starting_model(config, categories, spec, self.log)
        model = start.model.to(self.device)
        if config.freeze_backbone:
            freeze_backbone(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ModelError(f"{start.arch} has no trainable parameters left after --freeze-backbone")

        precision = self.precision
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        optimizer = make_optimizer(model, config, config.lr, config.weight_decay)
        network = model
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

        augmentation = Augmentation(scale=(config.min_crop_area, 1.0), color_jitter=config.color_jitter,
                                    hflip=config.hflip)
        train_set = ClipDataset(splits.train, categories, spec, augmentation, seed=config.seed)
        # Validation shards are disjoint (no padding with repeats), so summed counts are exact.
        val_set = ClipDataset(splits.val[self.dist.rank::self.dist.world_size], categories, spec)
        sampler = DistributedSampler(train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=config.seed)
        batches_per_epoch = math.ceil(len(sampler) / config.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate)
        total_steps = steps_per_epoch * config.epochs
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)

        history: list[dict] = []
        best: dict = {}
        bad_epochs = 0
        epoch = 0
        step = 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            epoch, step = state["epoch"], state["step"]
            history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
            restore_rng_state(state["rng"])
            self.log(f"resuming {self.run.root} after epoch {epoch} (optimizer step {step})")
            if self.dist.is_main:
                self.run.write_metrics(history)

        def checkpoint_meta(metrics: dict) -> dict:
            return {
                "arch": start.arch,
                "arch_kwargs": start.arch_kwargs,
                "categories": categories,
                "input": spec.to_meta(),
                "source": f"fine-tuned with `sifa finetune` (sifa {__version__}) from {start.description} "
                          f"on {splits.source}",
                "license": config.license or "unspecified",
                "training": {
                    "config": config.to_dict(),
                    "epoch": metrics["epoch"],
                    "optimizer_steps": metrics["step"],
                    "train_clips": len(splits.train),
                    "val_clips": len(splits.val),
                    "processes": self.dist.world_size,
                },
                "metrics": {k: metrics[k] for k in ("epoch", "val_top1", "val_top5", "val_loss", "val_per_class")},
            }

        stopped_early = bool(config.patience and bad_epochs >= config.patience)
        if epoch >= config.epochs or stopped_early:
            self.log(f"{self.run.root} already finished ({epoch} epochs); pass a larger --epochs to train on")
        while epoch < config.epochs and not stopped_early:
            epoch_start = time.perf_counter()
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            loader = self._loader(train_set, sampler, epoch)
            set_train_mode(model, config.freeze_backbone)
            loss_sum = torch.zeros((), dtype=torch.float64)
            nll_sum = torch.zeros((), dtype=torch.float64)
            correct = torch.zeros((), dtype=torch.float64)
            seen = torch.zeros((), dtype=torch.float64)
            optimizer.zero_grad(set_to_none=True)
            batches = self._progress(loader, f"epoch {epoch + 1}/{config.epochs}", batches_per_epoch)
            # Where the epoch's time goes: waiting for the loader (decoding, augmentation, worker
            # start-up) versus the model; the first batch also pays the loader's start-up.
            data_wait, first_batch = 0.0, None
            waiting_since = time.perf_counter()
            for batch_index, (clips, labels) in enumerate(batches):
                arrived = time.perf_counter()
                data_wait += arrived - waiting_since
                if first_batch is None:
                    first_batch = arrived - epoch_start
                clips = clips.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                in_step = batch_index % config.accumulate
                steps_in_this_group = min(config.accumulate, batches_per_epoch - (batch_index - in_step))
                last_of_group = in_step == steps_in_this_group - 1
                sync = network.no_sync() if self.dist.enabled and not last_of_group else nullcontext()
                with sync:
                    with autocast(self.device, precision):
                        outputs = network(clips)
                    loss = classification_loss(outputs, labels, config.label_smoothing)
                    auxiliary = model.auxiliary_loss() if hasattr(model, "auxiliary_loss") else None
                    if auxiliary is not None:  # the motion-readout SIFA blocks' alignment (models/blocks.py)
                        loss = loss + auxiliary
                    scaler.scale(loss / steps_in_this_group).backward()
                loss_sum += loss.detach().double().cpu() * len(labels)
                probabilities = head_probabilities(outputs).detach().float()
                # the validation loss's definition, on the (augmented) training clips
                nll_sum -= probabilities.gather(1, labels[:, None]).clamp_min(1e-12).log().sum().double().cpu()
                correct += (probabilities.argmax(dim=-1) == labels).sum().double().cpu()
                seen += len(labels)
                if last_of_group:
                    lr = get_lr(step, base_lr=config.lr, total_steps=total_steps, warmup_steps=warmup_steps,
                                min_lr=config.min_lr)
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    if config.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(trainable, config.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                if not self.progress and (batch_index + 1) % config.log_every == 0:
                    self.log(f"epoch {epoch + 1}/{config.epochs} batch {batch_index + 1}/{batches_per_epoch} "
                             f"loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.3g}")
                waiting_since = time.perf_counter()
            train_seconds = time.perf_counter() - epoch_start
            totals = self.dist.sum(torch.stack([loss_sum, correct, seen, nll_sum]).to(self.device)).cpu()
            val_start = time.perf_counter()
            val = self.evaluate(network, val_set, len(categories), precision)
            val_seconds = time.perf_counter() - val_start
            check_finite(model, float(totals[0]), val.loss, epoch + 1, config.lr, self.run.best if best else None,
                         best.get("epoch"))
            epoch += 1
            record = {
                "epoch": epoch,
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": float(totals[0] / max(totals[2], 1)),
                "train_nll": float(totals[3] / max(totals[2], 1)),
                "train_top1": float(totals[1] / max(totals[2], 1)),
                "val_loss": val.loss,
                "val_top1": val.top1,
                "val_top5": val.top5,
                "val_per_class": val.per_class(categories),
                "val_clips": val.clips,
                "train_clips_per_s": float(totals[2]) / train_seconds,
                "epoch_seconds": time.perf_counter() - epoch_start,
                "data_wait_seconds": data_wait,
                "first_batch_seconds": first_batch or 0.0,
                "val_seconds": val_seconds,
            }
            history.append(record)
            improved = is_better(record, best, config.min_delta)
            if improved:
                best = {**{k: v for k, v in record.items()}, "confusion": val.confusion}
                bad_epochs = 0
            else:
                bad_epochs += 1
            stopped_early = bool(config.patience and bad_epochs >= config.patience)
            if self.dist.is_main:
                if improved:
                    self._save_checkpoint(self.run.best, model, checkpoint_meta(record))
                self._save_checkpoint(self.run.last, model, checkpoint_meta(record))
                save_training_state(self.run.state, {
                    "format": STATE_FORMAT,
                    "processes": self.dist.world_size,
                    "epoch": epoch,
                    "step": step,
                    "arch": start.arch,
                    "arch_kwargs": start.arch_kwargs,
                    "init_description": start.description,
                    "input": spec.to_meta(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "rng": rng_state(),
                })
                self.run.write_metrics(history)
                self._plot(history, best, categories)
            self.dist.barrier()
            self.log(epoch_line(record, config.epochs, improved))
            if len(history) >= 2 and history[-2]["epoch"] == epoch - 1:
                note = slow_epoch_note(history[-2], record)
                if note:
                    self.log(note)
            if stopped_early:
                self.log(f"stopping early: no improvement for {bad_epochs} epochs")
        if self.dist.enabled:
            dist.destroy_process_group()
        return TrainResult(
            run=self.run.root, categories=categories, history=history, best=best, epochs_done=epoch,
            stopped_early=stopped_early, skipped=len(splits.skipped), train_clips=len(splits.train),
            val_clips=len(splits.val), is_main=self.dist.is_main,
        )

    def _describe_start(self, splits: DatasetSplits, spec: InputSpec) -> None:
        skipped = f"{len(splits.skipped)} videos skipped, see {self.run.scan_report}" if splits.skipped \
            else "no video skipped"
        self.log(f"{len(splits.categories)} classes, {len(splits.train)} training and {len(splits.val)} "
                 f"validation clips ({skipped})")
        for line in describe_clip_lengths([*splits.train, *splits.val], spec):
            self.log(line)
        if splits.skipped:
            for item in splits.skipped[:5]:
                self.log(f"  skipped {item.path}: {item.problem}")
        if self.dist.enabled:
            self.log(f"data-parallel training on {self.dist.world_size} processes ({self.device.type})")

    def _loader(self, dataset: ClipDataset, sampler, epoch: int) -> DataLoader:
        workers = self.config.workers or 0
        return DataLoader(
            dataset, batch_size=self.config.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=False,
            # Workers' seeds come from this generator instead of the global RNG, which stays the
            # model's (dropout) alone; the clips' own randomness is seeded by (seed, epoch, index).
            generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch),
            persistent_workers=False, multiprocessing_context="fork" if workers and sys.platform != "win32" else None,
            worker_init_fn=_single_threaded_worker,
        )

    def _progress(self, iterable, description: str, total: int):
        if not (self.progress and self.dist.is_main):
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=description, unit="batch", leave=False, file=sys.stderr)

    @torch.no_grad()
    def evaluate(self, network: nn.Module, dataset: ClipDataset, num_classes: int,
                 precision: str) -> EpochMetrics:
        """Centre-clip accuracy on this process's validation shard, summed over all processes."""
        model = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        if self.dist.enabled:
            # Each process updated its normalisation statistics on its own shard: evaluate (and
            # save) rank 0's everywhere.
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        model.eval()
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        loss_sum = torch.zeros((), dtype=torch.float64)
        top5_hits = torch.zeros((), dtype=torch.float64)
        k = min(TOP_K, num_classes)
        if len(dataset):
            loader = DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False,
                                num_workers=self.config.workers or 0, worker_init_fn=_single_threaded_worker)
            for clips, labels in self._progress(loader, "validation", math.ceil(len(dataset) / self.config.batch_size)):
                clips = clips.to(self.device)
                with autocast(self.device, precision):
                    probabilities = predict_proba(model, clips).float().cpu()
                loss_sum -= probabilities.gather(1, labels[:, None]).clamp_min(1e-12).log().sum().double()
                top5_hits += (probabilities.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()
                predicted = probabilities.argmax(dim=1)
                confusion.index_put_((labels, predicted), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
        totals = self.dist.sum(torch.cat([confusion.flatten(), loss_sum[None], top5_hits[None]]).to(self.device)).cpu()
        confusion = totals[: num_classes * num_classes].view(num_classes, num_classes)
        clips = float(confusion.sum())
        return EpochMetrics(
            loss=float(totals[-2]) / max(clips, 1),
            top1=float(confusion.diagonal().sum()) / max(clips, 1),
            top5=float(totals[-1]) / max(clips, 1) if num_classes > TOP_K else None,
            confusion=confusion.round().long().tolist(),
            clips=int(clips),
        )

    def _save_checkpoint(self, path: Path, model: nn.Module, meta: dict) -> None:
        from sifa_cli.weights.checkpoint import save_checkpoint

        save_checkpoint(path, model, meta)

    def _plot(self, history: list[dict], best: dict, categories: list[str]) -> None:
        from sifa_cli.engine.plots import plot_confusion_matrix, plot_curves

        plot_curves(history, self.run.curves)
        plot_confusion_matrix(best["confusion"], categories, self.run.confusion,
                              f"Validation, best epoch ({best['epoch']}): top-1 {100 * best['val_top1']:.1f}%")


def train(config: TrainConfig, *, resume: bool = False, log: Log = _stderr_log, progress: bool = False) -> TrainResult:
    """Run (or resume) fine-tuning as `config` says; see the module docstring for what it writes."""
    if config.out is None:
        raise InputError("give the run folder with --out RUN")
    trainer = Trainer(config, resume=resume, log=log, progress=progress)
    with ExitStack() as held:
        if trainer.dist.is_main:
            # For the whole run: a second run into the same folder, or a --resume of it while it
            # still trains, would mix two runs' files (and resume's clean-up would delete ours).
            held.enter_context(lock_output(trainer.run.root, "--resume" if resume else "--out"))
        if resume:
            return _fit(trainer)
        before = _entries(trainer.run.root)
        try:
            return _fit(trainer)
        except BaseException:
            # A run that failed, or was interrupted (Ctrl-C, SIGTERM), before its first epoch was saved
            # holds nothing worth keeping but a scan report that lists videos left out (which the log or
            # the error named), and its config.yaml would make a retry refuse the folder (and --resume
            # repeat the error).
            if trainer.dist.is_main and not trainer.run.state.exists():
                named = _report_lists_videos(trainer.run.scan_report)  # then the log or the error named it
                _remove_new_entries(trainer.run.root, before, keep=trainer.run.scan_report.name if named else "")
            raise


def _fit(trainer: Trainer) -> TrainResult:
    try:
        return trainer.fit()
    except SifaError as exc:
        unwrapped = _unwrapped(exc)
        if unwrapped is exc:
            raise
        raise unwrapped from None
    except RuntimeError as exc:  # torch.distributed's errors (DistBackendError) are RuntimeErrors
        if not (trainer.dist.enabled and _peer_lost(exc)):
            raise
        raise SifaError(_peer_lost_message(trainer.dist, trainer.run.root)) from None


# What gloo and NCCL say when a peer process died mid-collective.
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "remote process exited",
              "socket closed")


def _peer_lost(exc: BaseException) -> bool:
    return any(marker in str(exc).lower() for marker in _PEER_LOST)


def _peer_lost_message(distributed: Distributed, run: Path) -> str:
    others = [rank for rank in range(distributed.world_size) if rank != distributed.rank]
    who = (f"training process rank {others[0]}" if len(others) == 1
           else f"one of the other training processes (ranks {', '.join(map(str, others))})")
    return (f"{who} stopped (killed or crashed), so rank {distributed.rank} stops too; {run} keeps the last "
            f"finished epoch, and `torchrun ... finetune --resume {run}` continues from it")


def _unwrapped(exc: SifaError) -> SifaError:
    """A SifaError raised in a DataLoader worker comes back re-created with the worker's whole
    traceback as its message; keep the original one line."""
    message = str(exc)
    if "\nOriginal Traceback" not in message:
        return exc
    last = message.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)


def _report_lists_videos(report: Path) -> bool:
    """Whether a scan report names any video left out (more than its header line)."""
    try:
        with report.open(encoding="utf-8") as handle:
            return sum(1 for _ in zip(range(2), handle)) > 1
    except OSError:
        return False


def _entries(folder: Path) -> Optional[set[str]]:
    """The names in `folder`, or None when it does not exist."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return None
    except OSError:
        return set()


def _remove_new_entries(folder: Path, before: Optional[set[str]], keep: str = "") -> None:
    """Delete what appeared in `folder` since `before` (files only, but `keep`), and the folder if it is
    new and empty."""
    for name in (_entries(folder) or set()) - (before or set()) - {keep}:
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
    if before is None:
        try:
            folder.rmdir()
        except OSError:
            pass
