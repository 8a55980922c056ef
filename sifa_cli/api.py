"""The Python API: from video files to labels in a script or a notebook, as `sifa predict` does it.

    import sifa_cli

    records = sifa_cli.predict(["a.mp4", "videos/"])          # the shipped default model
    records[0]["top"][0]                                      # {"label": "pan left", "score": 0.93}

    model = sifa_cli.load_model("runs/mine/best.safetensors")  # load once, predict many times
    records = sifa_cli.predict("b.mp4", model=model, top_k=3)

Each record is the JSON object `sifa predict --format json` writes for that input: "path", "top"
(labels and probabilities, best first), "views", "clips", "duration", "notes" when there is
something to know (a short video, a decoder fallback), "settings"; timelines add "windows" and
"segments". An input that cannot be read gives {"path", "error"} instead: nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

PathLike = Union[str, Path]


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode on `device`, its checkpoint metadata, and the weights it came from."""

    model: Any  # torch.nn.Module
    meta: dict
    weights: Optional[str]
    device: Any  # torch.device

    @property
    def categories(self) -> list[str]:
        return [str(c) for c in self.meta["categories"]]

    def __iter__(self):  # `model, meta = sifa_cli.load_model(...)` works too
        return iter((self.model, self.meta))


def load_model(weights: Optional[PathLike] = None, device: str = "auto") -> LoadedModel:
    """A model to predict with: `weights` is a registry name (`sifa weights list`), a checkpoint
    file (`sifa finetune`'s best.safetensors, or a reference SIFA .pth), or None for the shipped
    default. device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps."""
    from sifa_cli.engine.device import resolve_device
    from sifa_cli.weights.checkpoint import load_model as load_checkpoint_model

    model, meta = load_checkpoint_model(None if weights is None else str(weights), resolve_device(device),
                                        progress=False)
    return LoadedModel(model, meta, None if weights is None else str(weights), next(model.parameters()).device)


def predict(paths: Union[PathLike, Iterable[PathLike]], weights: Optional[PathLike] = None, *,
            model: Optional[LoadedModel] = None, top_k: int = 5, views: Optional[str] = None,
            device: str = "auto", precision: str = "fp32", batch_size: int = 8, decoders: Optional[int] = None,
            timeline: bool = False, window: Optional[float] = None,
            stride: Optional[float] = None) -> list[dict[str, Any]]:
    """Recognise the actions in videos; one record per video, in input order, then one {"path",
    "error"} record per argument that yielded no video (see the module docstring).

    paths: a file, a folder (searched for videos) or a glob pattern, or a list of them.
    weights: as `load_model`; or pass `model` from `load_model` to load once for many calls.
    views: multi-view testing "CLIPSxCROPS" (default: the model's). timeline: score windows of
    `window` seconds every `stride` seconds and merge them into segments (default: the time one clip
    of the model covers at each video's frame rate, every half of that)."""
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.data.inputs import find_videos
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.engine.records import check_counts, check_window_options
    from sifa_cli.engine.resume import file_identity
    from sifa_cli.engine.results import result_record
    from sifa_cli.engine.run_settings import prediction_settings, weights_file
    from sifa_cli.errors import InputError

    if model is not None and weights is not None:
        raise InputError("give weights or model, not both")
    check_counts(batch_size, top_k, decoders)
    if timeline:
        check_window_options(window, stride)
    arguments = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found = find_videos(arguments)
    if not found.videos and not found.problems:
        raise InputError("no videos given")
    loaded = model if model is not None else load_model(weights, device)
    predictor = Predictor(loaded.model, loaded.meta, device=loaded.device, precision=precision, views=views,
                          batch_size=batch_size, top_k=top_k, decoders=decoders)
    settings = prediction_settings(weights_file(loaded.weights), predictor.spec, predictor.views,
                                   predictor.top_k, (window, stride) if timeline else None)
    records = []
    with capture_native_stderr():
        results = (predictor.timeline(found.videos, window, stride) if timeline
                   else predictor.predict(found.videos))
        for result in results:
            record = result_record(result, str(predictor.views))
            if result.ok:
                record["settings"] = settings
                record.update(file_identity(result.path))
            records.append(record)
    # an argument that yielded no video (missing, an empty folder, a pattern matching nothing)
    return records + [{"path": argument, "error": problem} for argument, problem in found.problems]
