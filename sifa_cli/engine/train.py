"""Fine-tune a SIFA model on labelled videos: the training loop (`Trainer`, `train`), validation,
resume, and data-parallel training under torchrun.

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

The pieces live beside this file: `run_folder` (the folder, its checks and the training state),
`train_distributed` (torchrun processes, device, precision), `starting_model` (what --init starts
from), `optimization` (schedule, optimizer, loss, divergence, RNG state), `train_metrics` (what an
epoch measured, the best-epoch rule, the log lines) and `train_config` (the options).
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from sifa_cli import __version__
from sifa_cli.data.augment import Augmentation, swap_pairs
from sifa_cli.data.dataset import (
    ClipDataset,
    DatasetRefused,
    DatasetSplits,
    describe_clip_lengths,
    prepare_dataset,
    shortest_clip_time,
    write_scan_report,
)
from sifa_cli.data.spec import InputSpec
from sifa_cli.engine.device import autocast
from sifa_cli.engine.optimization import (
    check_finite,
    classification_loss,
    freeze_backbone,
    get_lr,
    make_optimizer,
    restore_rng_state,
    rng_state,
    set_train_mode,
)
from sifa_cli.engine.run_folder import (
    STATE_FORMAT,
    RunFolder,
    check_split_files,
    folder_entries,
    load_training_state,
    remove_new_entries,
    report_lists_videos,
    save_training_state,
)
from sifa_cli.engine.starting_model import StartingPoint, build_starting_model, default_init, init_arch_and_input
from sifa_cli.engine.train_config import (
    DEFAULT_LR,
    DEFAULT_MODEL,
    DEFAULT_WEIGHT_DECAY,
    TrainConfig,
    translation_class_names,
    write_config_yaml,
)
from sifa_cli.engine.train_distributed import (
    peer_lost,
    peer_lost_message,
    resolve_precision,
    start_distributed,
    training_device,
)
from sifa_cli.engine.train_metrics import TOP_K, EpochMetrics, TrainResult, epoch_line, is_better, slow_epoch_note
from sifa_cli.errors import InputError, ModelError, SifaError
from sifa_cli.fileio import lock_output
from sifa_cli.models import create_model, head_probabilities, predict_proba
from sifa_cli.models.motion_targets import global_shifts
from sifa_cli.wording import counted

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_workers() -> int:
    return min(8, max(0, (os.cpu_count() or 2) // 2))


def _single_threaded_worker(_worker_id: int) -> None:
    """Loader workers decode one clip each: OpenCV's own thread pool in every worker would
    oversubscribe the cores (torch already runs single-threaded in workers)."""
    import cv2

    cv2.setNumThreads(1)


def translation_labels(config: TrainConfig, categories: list[str], device: torch.device) -> torch.Tensor:
    """(classes,) bool: which class's clips the displacement loss measures (`translation_classes`)."""
    names = translation_class_names(config)
    unknown = [name for name in names if name not in categories]
    if unknown:
        raise InputError(f"translation_classes names {', '.join(repr(n) for n in unknown)}, not a class of the "
                         f"data ({', '.join(categories)})")
    return torch.tensor([name in names for name in categories], dtype=torch.bool, device=device)


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
        raise InputError(f"--resume {self.run.root}: this run trained on {counted(recorded, 'process', 'processes')}, "
                         f"this resume has {self.dist.world_size}; its learning-rate schedule is planned in steps per "
                         f"epoch for {recorded}, so resume it the same way: {how}")

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
        # Unless --frames or --step changes the clip, it covers the time the starting checkpoint's
        # clips covered (a file may record a longer `seconds` than frames x step / 30: its clips were
        # spread wider at test time), so that the fine-tuned model samples video as its start did.
        # Its test-time views (e.g. 1x3: three crops a clip) carry over too: training never reads them.
        keeps_clip = config.frames is None and config.step is None and recorded.get("seconds") is not None
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
                         resize=config.resize, mean=tuple(mean), std=tuple(std),
                         views=str(recorded.get("views", defaults.views)),
                         seconds=float(recorded["seconds"]) if keeps_clip else None)

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        config = self.config
        state = self.prepare_run_folder()
        if state is not None:
            self.check_same_processes(state)
        spec = InputSpec.from_meta(state["input"]) if state is not None else self.resolve_model_and_input()
        splits = self.load_dataset()
        categories = splits.categories
        if state is None:  # how short a clip this model learns from: `predict` notes only shorter ones
            spec = replace(spec, min_seconds=shortest_clip_time(splits.train, spec))
        if self.dist.is_main:
            write_config_yaml(config, self.run.config)
        self._describe_start(splits, spec)

        torch.manual_seed(config.seed)
        if state is not None:
            model = create_model(state["arch"], num_classes=len(categories), **state["arch_kwargs"])
            model.load_state_dict(state["model"])
            start = StartingPoint(model, state["arch"], state["arch_kwargs"], state["init_description"],
                                  state.get("motion_block"))
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

        translating = translation_labels(config, categories, self.device)
        augmentation = Augmentation(scale=(config.min_crop_area, 1.0), color_jitter=config.color_jitter,
                                    hflip=config.hflip, reverse=config.reverse,
                                    hflip_swaps=tuple(swap_pairs(config.hflip_swaps, "hflip_swaps")),
                                    reverse_swaps=tuple(swap_pairs(config.reverse_swaps, "reverse_swaps")))
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
                **({"motion_block": start.motion_block} if start.motion_block else {}),
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
                    auxiliary = None
                    if hasattr(model, "auxiliary_loss"):  # the displacement loss: models/motion_targets.py
                        shifts = global_shifts(clips) if config.displacement_loss > 0 else None
                        auxiliary = model.auxiliary_loss(shifts, translating[labels], config.displacement_loss,
                                                         tuple(clips.shape[2:]))
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
                    "motion_block": start.motion_block,
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
        before = folder_entries(trainer.run.root)
        try:
            return _fit(trainer)
        except BaseException:
            # A run that failed, or was interrupted (Ctrl-C, SIGTERM), before its first epoch was saved
            # holds nothing worth keeping but a scan report that lists videos left out (which the log or
            # the error named), and its config.yaml would make a retry refuse the folder (and --resume
            # repeat the error).
            if trainer.dist.is_main and not trainer.run.state.exists():
                named = report_lists_videos(trainer.run.scan_report)  # then the log or the error named it
                remove_new_entries(trainer.run.root, before, keep=trainer.run.scan_report.name if named else "")
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
        if not (trainer.dist.enabled and peer_lost(exc)):
            raise
        raise SifaError(peer_lost_message(trainer.dist, trainer.run.root)) from None


def _unwrapped(exc: SifaError) -> SifaError:
    """A SifaError raised in a DataLoader worker comes back re-created with the worker's whole
    traceback as its message; keep the original one line."""
    message = str(exc)
    if "\nOriginal Traceback" not in message:
        return exc
    last = message.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)
