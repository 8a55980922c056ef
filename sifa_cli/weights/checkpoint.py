"""Our checkpoint format, safe loading of foreign `.pth` files, and `load_model`.

A sifa checkpoint is a safetensors file: the tensors are the model's state dict, and the metadata
key "sifa" holds a JSON object (format "sifa-checkpoint/1") with the architecture, its arguments,
the categories and the input spec, so the file alone is enough to rebuild and run the model, and
"tensors_sha256", a digest of every tensor's name, dtype, shape and bytes, so that a damaged file is
refused on load instead of giving wrong (or NaN) scores. Files written before the digest existed
lack it and load unchecked.
Safetensors cannot run code when read; a `.pth` file is read with `torch.load(weights_only=True)`,
which refuses any pickle that asks for something other than tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from sifa_cli.fileio import atomic_write_path
from sifa_cli.errors import ModelError, WeightsError
from sifa_cli.weights.download import ProgressFn, fetch
from sifa_cli.weights.manifest import KIND_INIT, WeightsEntry, WeightsRegistry, load_registry

CHECKPOINT_FORMAT = "sifa-checkpoint/1"
META_KEY = "sifa"
DIGEST_KEY = "tensors_sha256"
# Suffixes that mark a --weights value as a file path rather than a registry name.
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")

StateDict = dict[str, Tensor]


def save_checkpoint(path: Union[str, Path], model_or_state_dict: Union[nn.Module, Mapping[str, Tensor]],
                    meta: Mapping[str, Any]) -> Path:
    """Write a self-contained checkpoint; the file appears complete or not at all."""
    path = Path(path)
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    meta = validate_meta({**meta, "format": CHECKPOINT_FORMAT}, str(path))
    tensors = _plain_tensors(state)
    meta[DIGEST_KEY] = tensors_digest(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory and written by Python: safetensors' own writer reports a full disk as a
    # SafetensorError naming no file.
    data = save(tensors, metadata={META_KEY: json.dumps(meta)})
    try:
        with atomic_write_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise WeightsError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    return path


def tensors_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and raw bytes, in name order: independent of
    how a file lays the tensors out, so it can be recomputed from a loaded state dict."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_digest(state: Mapping[str, Tensor], meta: Mapping[str, Any], where: str) -> bool:
    """Compare the tensors with the digest recorded when they were saved; True when checked,
    False for an older checkpoint without one. Raises WeightsError on a mismatch."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        return False
    if not isinstance(recorded, str) or tensors_digest(state) != recorded:
        raise WeightsError(f"{where}: its tensors do not match the checksum recorded when it was saved; the file "
                           "is damaged (download or create it again)")
    return True


def _plain_tensors(state: Mapping[str, Any]) -> StateDict:
    """Detached, contiguous CPU tensors; tensors sharing memory are copied (safetensors forbids sharing)."""
    tensors: StateDict = {}
    seen_storage: set[int] = set()
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"state dict entry {key} is a {type(value).__name__}, not a tensor")
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in seen_storage:
            tensor = tensor.clone()
        seen_storage.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def validate_meta(meta: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The metadata every checkpoint must carry, checked; returns a plain dict."""
    meta = dict(meta)
    fmt = meta.get("format", CHECKPOINT_FORMAT)
    if not isinstance(fmt, str) or not fmt.startswith("sifa-checkpoint/"):
        raise WeightsError(f"{where}: unknown checkpoint format {fmt!r}")
    if fmt != CHECKPOINT_FORMAT:
        raise WeightsError(f"{where}: checkpoint format {fmt} is newer than this sifa understands ({CHECKPOINT_FORMAT})")
    if not isinstance(meta.get("arch"), str) or not meta["arch"]:
        raise WeightsError(f"{where}: checkpoint metadata lacks the architecture name (\"arch\")")
    categories = meta.get("categories")
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        raise WeightsError(f"{where}: checkpoint metadata needs \"categories\", a non-empty list of labels")
    for key in ("arch_kwargs", "input", "training", "metrics"):
        if not isinstance(meta.setdefault(key, {}), dict):
            raise WeightsError(f"{where}: checkpoint metadata field \"{key}\" must be an object")
    return meta


def is_safetensors_file(path: Path) -> bool:
    """Recognise safetensors by content: an 8-byte header length, then a JSON object."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def broken_safetensors(path: Path) -> Union[str, None]:
    """Why a file that is named or shaped like safetensors cannot be one (cut short, a header length
    past its end), or None. Such files must not be mistaken for pickles."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return None
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return None  # a zip or a pickle (whatever its name): torch.load judges it
    named = path.suffix.lower() == ".safetensors"
    if len(head) < 9:
        return f"{path}: only {size} bytes, too short for a safetensors file (truncated or corrupt)" if named else None
    declared = int.from_bytes(head[:8], "little")
    if (named or head[8:9] == b"{") and declared > size - 8:
        return (f"{path}: truncated or corrupt safetensors file: its header is said to take {declared} bytes "
                f"but only {size - 8} follow")
    return None


def read_checkpoint_meta(path: Union[str, Path]) -> dict[str, Any]:
    """The "sifa" metadata of a checkpoint, without reading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except FileNotFoundError:
        raise WeightsError(f"checkpoint not found: {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors checkpoint ({_first_line(exc)})") from None
    if META_KEY not in raw:
        raise WeightsError(
            f"{path} has no sifa metadata; convert a reference checkpoint with `sifa weights import`"
        )
    try:
        meta = json.loads(raw[META_KEY])
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: the sifa metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: the sifa metadata must be a JSON object")
    return validate_meta(meta, str(path))


def load_checkpoint(path: Union[str, Path]) -> tuple[StateDict, dict[str, Any]]:
    """(state dict on CPU, metadata) of a sifa checkpoint."""
    meta = read_checkpoint_meta(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read the tensors ({_first_line(exc)})") from None
    check_digest(state, meta, str(path))
    return state, meta


_PICKLE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_torch_state_dict(path: Union[str, Path]) -> StateDict:
    """Tensors of a PyTorch `.pth` file, never running code it contains.

    A `{"state_dict": ...}` or `{"model": ...}` wrapper is unwrapped and a `module.` prefix stripped.
    """
    from sifa_cli.models import clean_reference_state_dict

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    broken = broken_safetensors(path)
    if broken:
        raise WeightsError(broken)
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive, or (before PyTorch 1.6) a pickle: protocol 2+ starts with 0x80.
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise WeightsError(f"cannot read {path}: it is neither a safetensors file nor a PyTorch checkpoint "
                           "(corrupt, truncated or another format)")
    try:
        # An open handle, not the path: torch picks a reader by file-name suffix, we by content.
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = _PICKLE_GLOBAL.search(str(exc))
        if wanted is None and "global" not in str(exc).lower():  # not a refused import: just not a pickle
            raise WeightsError(f"cannot read {path}: it is neither a safetensors file nor a PyTorch checkpoint "
                               "(corrupt, truncated or another format)") from None
        asks = f"it asks for {wanted.group(1)}" if wanted else "it holds objects other than tensors"
        raise WeightsError(
            f"refusing to load {path}: it is a pickle that would run code when unpickled ({asks}); "
            "weights files need only tensors, and nothing in it was executed"
        ) from None
    except Exception as exc:  # torch reports a damaged file in many ways (KeyError, RuntimeError, EOFError ...)
        if "TorchScript" in str(exc):
            raise WeightsError(f"{path} is a TorchScript model (as `sifa export` writes), not a checkpoint: give the "
                               "checkpoint it was exported from, or run it with torch.jit.load") from None
        raise WeightsError(f"cannot read {path} as a PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state = clean_reference_state_dict(obj)
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if not tensors:
        raise WeightsError(f"{path} holds no tensors (keys: {', '.join(list(state)[:5])})")
    return tensors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_model(state: StateDict, meta: Mapping[str, Any], source: str) -> nn.Module:
    """Create the model `meta` describes and load `state` into it with strict key matching."""
    from sifa_cli.models import create_model

    categories = meta["categories"]
    arch_kwargs = dict(meta.get("arch_kwargs") or {})
    try:
        model = create_model(meta["arch"], num_classes=len(categories), **arch_kwargs)
    except TypeError as exc:  # an argument this version's constructor does not take
        raise WeightsError(f"{source}: {meta['arch']} cannot be built with arch_kwargs {arch_kwargs} ({exc})") from None
    except (ModelError, ValueError, RuntimeError) as exc:  # values out of range (clip_length: -8)
        raise WeightsError(f"{source}: the checkpoint's metadata asks for an unusable model: {_first_line(exc)}") from None
    load_strict(model, state, source, meta["arch"])
    return model


def load_strict(model: nn.Module, state: StateDict, source: str, arch: str) -> None:
    """load_state_dict(strict=True), with a one-line error that says what does not fit and why."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes: list[str] = []
    if not missing and not unexpected:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as exc:
            wrong_shapes = [line.strip().rstrip(".") for line in str(exc).splitlines() if "size mismatch" in line]
            if not wrong_shapes:
                raise WeightsError(f"{source} does not fit {arch}: {_first_line(exc)}") from None
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if wrong_shapes:
        problems.append(f"{len(wrong_shapes)} of another shape (first: {wrong_shapes[0]})")
    from sifa_cli.weights.convert import guess_arch

    guesses = [name for name in guess_arch(state) if name != arch]
    hint = f"it looks like a {' or '.join(guesses)} checkpoint" if guesses else "it was made for another architecture"
    raise WeightsError(f"{source} does not fit {arch}: {'; '.join(problems)}; {hint}")


def weights_target(weights: Union[str, Path, None], registry: WeightsRegistry) -> Union[Path, WeightsEntry]:
    """What a --weights value names: an existing file, or a registry entry (None: the default)."""
    if weights is None:
        return registry.default_entry()
    candidate = Path(weights).expanduser()
    if candidate.is_file() and str(weights) not in registry.entries:
        return candidate
    if candidate.is_dir():
        raise WeightsError(f"{weights} is a folder; give a checkpoint file or a registry name")
    if str(weights) in registry.entries:
        return registry.get(str(weights))
    if isinstance(weights, Path) or os.sep in str(weights) or str(weights).endswith(_FILE_SUFFIXES):
        raise WeightsError(f"weights file not found: {weights}")
    return registry.get(str(weights))


def load_model(weights: Union[str, Path, None], device: Union[str, torch.device] = "cpu", *,
               manifests: Iterable[Union[str, Path]] = (),
               progress: Union[bool, ProgressFn] = True) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on `device`, its metadata) from a registry name, a file, or the default.

    Files may be sifa checkpoints (safetensors) or reference SIFA `.pth` checkpoints, whose
    architecture is recognised from their tensors and whose classes are numbered.
    """
    target = weights_target(weights, load_registry(manifests))
    entry = None if isinstance(target, Path) else target
    if entry is not None and entry.kind == KIND_INIT:
        raise WeightsError(
            f"'{entry.name}' is an ImageNet initialisation for fine-tuning {entry.arch}, not a video "
            "classifier; pass it to `sifa finetune`"
        )
    path = target if entry is None else fetch(entry, progress=progress)
    if is_safetensors_file(path):
        state, meta = load_checkpoint(path)
    else:
        from sifa_cli.weights.convert import reference_meta

        state = load_torch_state_dict(path)
        meta = reference_meta(state, arch=None, source=f"reference checkpoint {path.name}")
    if entry is not None and meta["arch"] != entry.arch:
        raise WeightsError(f"{path} holds a {meta['arch']} model but the manifest entry '{entry.name}' says {entry.arch}")
    model = build_model(state, meta, str(path))
    return model.eval().to(device), meta


def load_init_state_dict(name: str, *, manifests: Iterable[Union[str, Path]] = (),
                         progress: Union[bool, ProgressFn] = True) -> tuple[StateDict, WeightsEntry]:
    """The image-model tensors of an ImageNet initialisation entry, fetched and verified."""
    entry = load_registry(manifests).get(name)
    if entry.kind != KIND_INIT:
        raise WeightsError(f"'{name}' is a video classifier, not an ImageNet initialisation")
    return load_torch_state_dict(fetch(entry, progress=progress)), entry
