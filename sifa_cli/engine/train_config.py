"""Fine-tuning options: their defaults, reading them from YAML/TOML, and command-line overrides.

Precedence: built-in defaults < config file < command line. Options left as None are filled in
when the run starts (from the starting checkpoint or from the model), and the run folder records
the resolved values in `config.yaml`, which is what `--resume` reads back.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from sifa_cli.data.augment import swap_pairs
from sifa_cli.data.spec import SAMPLING_MODES
from sifa_cli.errors import InputError
from sifa_cli.wording import form

DEFAULT_MODEL = "sifa_resnet_small"
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Per-optimizer defaults for options left unset. The default recipe (AdamW at 3e-3, 12 epochs, one
# warm-up epoch, then a cosine) won a sweep on a few dozen clips per class started from the shipped
# model: README, "How far the camera-pretrained start gets you".
DEFAULT_LR = {"sgd": 0.01, "adamw": 3e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}
# Options that may differ when a run is resumed; anything else must match the recorded run.
RESUME_OVERRIDABLE = ("epochs", "device", "workers", "scan_workers", "log_every", "patience", "min_delta")


@dataclass
class TrainConfig:
    # Data
    data: Optional[str] = None  # class folders, root with train/ + val/, or a CSV of path,label
    val: Optional[str] = None  # a separate validation set (same formats)
    val_fraction: float = 0.2  # held out per class when there is no validation set
    min_frames: Optional[int] = None  # shorter videos are skipped; default: none (short ones are spread over a clip)
    scan_workers: int = 8
    allow_missing_classes: bool = False  # train on even if every video of some class is unusable
    workers: Optional[int] = None  # data-loading processes; default: half the CPU cores, at most 8
    # Model and its input
    model: Optional[str] = None  # default: the --init checkpoint's architecture, else DEFAULT_MODEL
    init: Optional[str] = None  # scratch | imagenet | a registry name | a checkpoint file; None: the default model
    sifa: bool = True  # False trains with every SIFA step switched off (the ablation)
    frames: Optional[int] = None
    step: Optional[int] = None
    sampling: Optional[str] = None
    size: Optional[int] = None
    resize: Optional[int] = None
    # Optimisation
    epochs: int = 12
    batch_size: int = 8  # per process
    accumulate: int = 1  # batches per optimizer step
    optimizer: str = "adamw"
    lr: Optional[float] = None
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: Optional[float] = None
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 0.0  # max gradient norm; 0 turns clipping off
    # Learning-rate multiplier for the SIFA offset convolutions (config file only): their outputs start
    # at zero and stay near it at the common rate.
    offset_lr_scale: float = 1.0
    # A displacement loss for the motion-readout SIFA blocks (config file only; models/motion_targets.py):
    # its weight, and the comma-separated classes whose clips are one translation of the scene (pans, tilts)
    displacement_loss: float = 0.0
    translation_classes: Optional[str] = None
    precision: str = "auto"
    freeze_backbone: bool = False
    # Augmentation
    hflip: bool = False
    # Play half the training clips backwards (config file only), and the comma-separated pairs of
    # classes that a mirrored / reversed clip swaps ("pan left=pan right, zoom in=zoom out")
    reverse: bool = False
    hflip_swaps: Optional[str] = None
    reverse_swaps: Optional[str] = None
    color_jitter: float = 0.4
    min_crop_area: float = 0.35
    # Run
    out: Optional[str] = None
    device: str = "auto"
    seed: int = 0
    patience: int = 0  # epochs without improvement before stopping; 0 never stops early
    min_delta: float = 0.0
    log_every: int = 10
    license: str = ""  # recorded in the checkpoints' metadata

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))
_FIELD_TYPES = typing.get_type_hints(TrainConfig)


def _base_type(name: str) -> type:
    hint = _FIELD_TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def coerce_option(name: str, value: Any, where: str) -> Any:
    """Check one option's value against its type; ints are accepted where floats are expected."""
    if value is None:
        return None
    kind = _base_type(name)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        if isinstance(value, Path):
            value = str(value)
        ok = isinstance(value, str)
    if not ok:
        raise InputError(f"{where}: '{name}' must be a {kind.__name__}, got {value!r}")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a YAML (.yaml/.yml) or TOML (.toml) file; keys may use - or _."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            doc = yaml.safe_load(text)
        else:
            raise InputError(f"{path}: a config file must end in .yaml, .yml or .toml")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file {path}: {exc}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"config file {path} is not valid: {str(exc).splitlines()[0]}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"config file {path} must hold a mapping of option names to values")
    options = {str(key).replace("-", "_"): value for key, value in doc.items()}
    unknown = sorted(set(options) - set(FIELD_NAMES))
    if unknown:
        raise InputError(f"config file {path}: unknown {form(len(unknown), 'option')} {', '.join(unknown)}; "
                         f"known: {', '.join(FIELD_NAMES)}")
    return {name: coerce_option(name, value, f"config file {path}") for name, value in options.items()}


def build_config(overrides: Mapping[str, Any], config_file: Optional[Path] = None) -> TrainConfig:
    """Defaults, then the config file, then `overrides` (options given on the command line)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    given = {k: coerce_option(k, v, "command line") for k, v in overrides.items() if v is not None}
    values.update(given)
    config = TrainConfig(**values)
    check_config(config, from_command_line=given)
    return config


# Seeds feed torch.manual_seed, numpy and the loader's generator (seed x 100003 + epoch, a signed
# 64-bit number): 32 bits keep every one of them in range.
MAX_SEED = 2**32 - 1
# Threads checking videos before training: each runs a decoder process, so more would only cost memory.
MAX_SCAN_WORKERS = 32


def option_name(name: str) -> str:
    """The command-line spelling of a config key: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def translation_class_names(config: TrainConfig) -> list[str]:
    """The classes of the `translation_classes` key, in its order."""
    return [name.strip() for name in (config.translation_classes or "").split(",") if name.strip()]


def check_config(config: TrainConfig, from_command_line: typing.Collection[str] = ()) -> None:
    """Reject values that cannot work, with one line naming the option: as `--batch-size` when the
    value came from the command line, as the config key `batch_size` when it came from a file."""
    problems = []

    def need(condition: bool, name: str, message: str) -> None:
        if not condition:
            problems.append(f"{option_name(name) if name in from_command_line else name} {message}")

    for name in FIELD_NAMES:  # inf and nan pass many a range check below (nan > 0 is False, inf > 0 True)
        value = getattr(config, name)
        if isinstance(value, float) and not math.isfinite(value):
            need(False, name, f"must be a finite number, got {value}")
    if problems:
        raise InputError("; ".join(problems))
    need(config.epochs >= 1, "epochs", f"must be at least 1, got {config.epochs}")
    need(config.batch_size >= 1, "batch_size", f"must be at least 1, got {config.batch_size}")
    need(config.accumulate >= 1, "accumulate", f"must be at least 1, got {config.accumulate}")
    need(config.optimizer in OPTIMIZERS, "optimizer",
         f"must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    need(config.precision in PRECISIONS, "precision",
         f"must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    need(config.lr is None or config.lr > 0, "lr", f"must be positive, got {config.lr}")
    need(config.min_lr >= 0, "min_lr", f"must not be negative, got {config.min_lr}")
    need(config.weight_decay is None or config.weight_decay >= 0, "weight_decay", "must not be negative")
    need(0 <= config.momentum < 1, "momentum", f"must be in [0, 1), got {config.momentum}")
    need(config.warmup_epochs >= 0, "warmup_epochs", "must not be negative")
    need(0 <= config.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {config.label_smoothing}")
    need(config.clip_grad >= 0, "clip_grad", "must not be negative (0 turns it off)")
    need(config.offset_lr_scale > 0, "offset_lr_scale", f"must be positive, got {config.offset_lr_scale}")
    need(config.displacement_loss >= 0, "displacement_loss", f"must not be negative, got {config.displacement_loss}")
    need(config.displacement_loss == 0 or bool(translation_class_names(config)), "translation_classes",
         "must name the classes whose clips are one translation of the scene when displacement_loss is set")
    need(not config.hflip_swaps or config.hflip, "hflip_swaps",
         "swaps classes of mirrored clips, so it needs hflip turned on")
    need(not config.reverse_swaps or config.reverse, "reverse_swaps",
         "swaps classes of clips played backwards, so it needs reverse turned on")
    need(0 <= config.color_jitter < 1, "color_jitter", f"must be in [0, 1), got {config.color_jitter}")
    need(0 < config.min_crop_area <= 1, "min_crop_area", f"must be in (0, 1], got {config.min_crop_area}")
    need(0 < config.val_fraction < 1, "val_fraction", f"must be between 0 and 1, got {config.val_fraction}")
    need(config.patience >= 0, "patience", "must not be negative (0 turns early stopping off)")
    need(config.min_delta >= 0, "min_delta", f"must not be negative, got {config.min_delta}")
    need(0 <= config.seed <= MAX_SEED, "seed", f"must be between 0 and {MAX_SEED}, got {config.seed}")
    need(config.log_every >= 1, "log_every", "must be at least 1")
    need(1 <= config.scan_workers <= MAX_SCAN_WORKERS, "scan_workers",
         f"must be between 1 and {MAX_SCAN_WORKERS} (each opens a decoder process of about 30 MB), "
         f"got {config.scan_workers}")
    need(config.workers is None or config.workers >= 0, "workers", "must not be negative")
    need(config.min_frames is None or config.min_frames >= 1, "min_frames", "must be at least 1")
    need(config.frames is None or config.frames >= 1, "frames", "must be at least 1")
    need(config.step is None or config.step >= 1, "step", "must be at least 1")
    need(config.sampling is None or config.sampling in SAMPLING_MODES, "sampling",
         f"must be one of {', '.join(SAMPLING_MODES)}, got {config.sampling!r}")
    need(config.size is None or (config.size >= 32 and config.size % 32 == 0), "size",
         f"must be a multiple of 32 (the models downsample by 32), got {config.size}")
    need(config.resize is None or config.size is None or config.resize >= config.size, "resize",
         f"must be at least the crop size ({config.size}), got {config.resize}")
    for key in ("hflip_swaps", "reverse_swaps"):  # their form now; their class names once the data is read
        try:
            swap_pairs(getattr(config, key), key)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("; ".join(problems))


def write_config_yaml(config: TrainConfig, path: Path) -> None:
    from sifa_cli.fileio import atomic_write_path

    with atomic_write_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def resumed_config(recorded: Path, overrides: Mapping[str, Any]) -> TrainConfig:
    """The recorded run's config with the few options a resume may change."""
    config = build_config({}, recorded)
    changed = {}
    for name, value in overrides.items():
        if value is None:
            continue
        value = coerce_option(name, value, "command line")
        if name in RESUME_OVERRIDABLE:
            changed[name] = value
        elif name not in ("out",) and value != getattr(config, name):
            raise InputError(
                f"cannot change '{name}' when resuming (the run used {getattr(config, name)!r}); "
                f"a resume may only change {', '.join(RESUME_OVERRIDABLE)}"
            )
    config = dataclasses.replace(config, **changed)
    check_config(config, from_command_line=changed)
    return config
