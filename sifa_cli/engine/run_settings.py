"""What made a set of predictions, recorded in every result so a results file can be resumed safely.

Each successful record carries `"settings"`: the weights file's sha256, the model input (frames,
step, sampling, crop and resize, the seconds a clip covers), the views, top-k and, for timelines,
window and stride (null where left to their defaults, `engine.predict.window_and_stride`). All but
top-k must match for a re-run to add to a file. A re-run
with the same --output only adds to a file whose records were made with the same settings;
otherwise it stops with one line saying what differs (`--overwrite` starts the file afresh).
Records written before settings were recorded (an older sifa) count as unknown settings and are
refused the same way: the safe choice, since nothing says how they were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError
from sifa_cli.wording import counted, form

# The settings that change what a result means; device, precision, batch size and decoder do not,
# and neither does top-k (how many of the ranked labels are kept: a re-run may list more or fewer).
COMPARED = ("weights_sha256", "input", "views", "timeline")
# seconds: clips are sampled by time (the same frames at 30 fps as before it was recorded, not at
# other frame rates, so results from before are refused like any other change of input)
INPUT_FIELDS = ("frames", "step", "sampling", "size", "resize", "seconds")


def weights_file(weights: Union[str, Path, None], manifests: Iterable[Union[str, Path]] = ()) -> tuple[Path, str]:
    """(the local file a --weights value loads, a name for it): a registry entry's verified copy and
    its registry name, or the file and its path as given."""
    from sifa_cli.weights.checkpoint import weights_target
    from sifa_cli.weights.download import fetch
    from sifa_cli.weights.manifest import load_registry

    target = weights_target(weights, load_registry(manifests))
    if isinstance(target, Path):
        return target, str(weights)
    return fetch(target, progress=False), target.name


def prediction_settings(weights: tuple[Path, str], spec: InputSpec, views: Any, top_k: int,
                        timeline: Optional[tuple[Optional[float], Optional[float]]] = None) -> dict:
    """The settings record for predictions made with these choices (see the module docstring);
    `weights` as `weights_file` returns it."""
    from sifa_cli.weights.cache import file_sha256

    weights_path, weights_name = weights
    return {
        "weights": weights_name,
        "weights_sha256": file_sha256(Path(weights_path)),
        "input": {name: getattr(spec, name) for name in INPUT_FIELDS},
        "views": str(views),
        "top_k": int(top_k),
        "timeline": None if timeline is None else {"window": _seconds(timeline[0]), "stride": _seconds(timeline[1])},
    }


def _seconds(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], where: tuple[str, str] = ("there", "now")) -> str:
    """'views 1x1 there, 4x3 now; ...' for the compared settings that differ."""
    parts = []
    for key in COMPARED:
        if old.get(key) != new.get(key):
            parts.append(f"{key.replace('_', ' ')} {_show(key, old.get(key))} {where[0]}, "
                         f"{_show(key, new.get(key))} {where[1]}")
    return "; ".join(parts)


def _show(key: str, value: Any) -> str:
    if value is None:
        return "off" if key == "timeline" else "unknown"
    if key == "weights_sha256":
        return str(value)[:12]
    if key == "input" and isinstance(value, Mapping):
        span = f" over {value['seconds']:.2f} s" if isinstance(value.get("seconds"), (int, float)) else \
            " sampled by frame index"
        return (f"{value.get('frames')} frames{span} ({value.get('sampling')}, step {value.get('step')}), "
                f"crop {value.get('size')} of {value.get('resize')}")
    if key == "timeline" and isinstance(value, Mapping):
        window, stride = value.get("window"), value.get("stride")
        window_text = "(the model's clip span)" if window is None else f"{window:g} s"
        stride_text = "(half the window)" if stride is None else f"{stride:g} s"
        text = f"window {window_text} stride {stride_text}"
        if "cuts" in value:
            cuts = value.get("cuts")
            text += f", cuts {'off' if cuts is None else f'at {cuts:g}'}, uncertain below " \
                    f"{value.get('uncertain_below')} or within {value.get('uncertain_margin')}"
        return text
    return str(value)


def check_resumable(kept: list[dict], settings: Mapping[str, Any], output: Path) -> None:
    """Refuse to add results made with `settings` to a file whose `kept` records were made otherwise."""
    advice = f"write to another --output, or pass --overwrite to start {output} afresh"
    unknown = [r for r in kept if not isinstance(r.get("settings"), Mapping)]
    if unknown:
        raise InputError(f"--output {output} holds {counted(len(unknown), 'result')} with no recorded settings "
                         f"(written by an older sifa), so {form(len(unknown), 'it', 'they')} cannot be known to match "
                         f"this run; {advice}")
    for record in kept:
        difference = describe_difference(record["settings"], settings)
        if difference:
            raise InputError(f"--output {output} holds results made with other settings ({difference}); {advice}")
