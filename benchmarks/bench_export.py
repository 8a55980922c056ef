"""onnxruntime beside PyTorch on the CPU: the exported ONNX file against the plain and prepared model.

    python benchmarks/bench_export.py                                   # shipped default, batch 1 and 8
    python benchmarks/bench_export.py --model sifa_resnet50 --batch 1   # 16x224, random weights
    python benchmarks/bench_export.py --repeats 3

Exports through `sifa_cli.engine.export` (so the file is the one `sifa export` writes), then times
the three in interleaved rounds (median of --repeats after a warm-up), fp32, inference mode, with
onnxruntime given as many intra-op threads as torch uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sifa_cli.engine.export import export_model, onnx_session, run_onnx
from sifa_cli.models import create_model, prepare_for_inference
from sifa_cli.weights.checkpoint import load_model


def interleaved(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="an architecture with random weights; default: the shipped model")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        model, meta = load_model(None)
        name = meta["arch"] + " (shipped default)"
    else:
        model = create_model(args.model, num_classes=400, clip_length=args.frames).eval()
        meta = {"arch": args.model, "categories": [str(i) for i in range(400)],
                "input": {"frames": args.frames, "size": args.size, "resize": args.size}}
        name = args.model
    prepared = prepare_for_inference(model)
    spec = meta["input"]
    report = {"model": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        started = time.perf_counter()
        export_model(model, meta, "onnx", path)
        report["export_s"] = round(time.perf_counter() - started, 1)
        session = onnx_session(path, threads=torch.get_num_threads())
        for batch in args.batch:
            x = torch.randn(batch, 3, spec["frames"], spec["size"], spec["size"])
            with torch.inference_mode():
                timings = interleaved({
                    "torch_plain_s": lambda: model(x),
                    "torch_prepared_s": lambda: prepared(x),
                    "onnxruntime_s": lambda: run_onnx(session, x),
                }, args.repeats)
            timings = {k: round(v, 4) for k, v in timings.items()}
            timings["onnxruntime_speedup_vs_prepared"] = round(timings["torch_prepared_s"] / timings["onnxruntime_s"], 2)
            report["results"][f"batch {batch}, input {list(x.shape)}"] = timings
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
