"""Speed and memory of the SIFA backbone and operator.

    python benchmarks/bench_model.py                  # CPU, batch 1, 16x224, SIFA-R50
    python benchmarks/bench_model.py --device cuda    # the same on a GPU
    python benchmarks/bench_model.py --model sifa_resnet_small --repeats 5
    python benchmarks/bench_model.py --no-bf16        # skip the bf16 rows (emulated, very slow on AVX2)

Reports the median of --repeats timed runs after a warm-up. The fp32 rows (plain model, the model from
`prepare_for_inference`, each with the SIFA step on and off) are timed in interleaved rounds, so a
machine shared with other work slows them alike. An fp32 matmul (3136x1024x256, 20 calls) is timed in
the same rounds: `sgemm_gmac_per_s`, and with `gmacs` (torch's flop counter / 2) the share of that rate
each network reaches.
Operator memory: what autograd saves for backward (exact), and the peak during forward+backward
(CUDA allocator counters; sampled RSS on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from torch.utils.flop_counter import FlopCounterMode

from sifa_cli.allocator import keep_freed_memory
from sifa_cli.models import create_model, prepare_for_inference
from sifa_cli.models.ops import sifa_attention

# Feature shapes the operator sees in SIFA-R50 for a 16x224 clip (layer2, layer3, layer4).
OPERATOR_SHAPES = {"layer2": (1, 128, 4, 28, 28), "layer3": (1, 256, 4, 14, 14), "layer4": (1, 512, 4, 7, 7)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, device: str, repeats: int) -> dict:
    """Median seconds of each function, timed in rounds that call every function once."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


SGEMM = (3136, 1024, 256)  # M, K, N: the shape of a layer3 1x1 convolution of SIFA-R50, batch 1
SGEMM_CALLS = 20


def sgemm(device: str):
    """A function doing SGEMM_CALLS fp32 matmuls of shape SGEMM (timed with the networks)."""
    a = torch.randn(SGEMM[0], SGEMM[1], device=device)
    b = torch.randn(SGEMM[1], SGEMM[2], device=device)
    out = torch.empty(SGEMM[0], SGEMM[2], device=device)

    def run():
        for _ in range(SGEMM_CALLS):
            torch.mm(a, b, out=out)

    return run


def sgemm_gmac_per_s(seconds: float) -> float:
    return SGEMM[0] * SGEMM[1] * SGEMM[2] * SGEMM_CALLS / seconds / 1e9


def bench_network(name: str, device: str, repeats: int, frames: int, size: int, bf16: bool = True) -> dict:
    model = create_model(name, num_classes=400, clip_length=frames).to(device).eval()
    prepared = prepare_for_inference(model)
    x = torch.randn(1, 3, frames, size, size, device=device)
    results = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x)
        results["gmacs"] = counter.get_total_flops() / 2e9

        def sifa(enabled: bool):
            model.set_sifa_enabled(enabled)
            prepared.set_sifa_enabled(enabled)

        def run(m, enabled):
            return lambda: (sifa(enabled), m(x))

        results.update(interleaved({
            "sgemm_s": sgemm(device),
            "fp32_s": run(model, True),
            "fp32_prepared_s": run(prepared, True),
            "fp32_sifa_disabled_s": run(model, False),
            "fp32_prepared_sifa_disabled_s": run(prepared, False),
        }, device, repeats))
        sifa(True)
        results["sgemm_gmac_per_s"] = sgemm_gmac_per_s(results.pop("sgemm_s"))
        for key in ("fp32_s", "fp32_prepared_s"):
            results[key.replace("_s", "_gmac_per_s")] = results["gmacs"] / results[key]
            results[key.replace("_s", "_share_of_sgemm")] = results[key.replace("_s", "_gmac_per_s")] / results["sgemm_gmac_per_s"]
        results["prepared_sifa_step_share"] = 1 - results["fp32_prepared_sifa_disabled_s"] / results["fp32_prepared_s"]
        if bf16:
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
                results["bf16_autocast_s"] = timed(lambda: model(x), device, repeats)
            model_bf16 = create_model(name, num_classes=400, clip_length=frames).to(device, torch.bfloat16).eval()
            results["bf16_weights_s"] = timed(lambda: model_bf16(x.bfloat16()), device, repeats)
    return results


def bench_operator(device: str, repeats: int) -> dict:
    results = {}
    for layer, shape in OPERATOR_SHAPES.items():
        x = torch.randn(shape, device=device)
        off = torch.randn(shape[0], 18, *shape[2:], device=device)
        forward = timed(lambda: sifa_attention(x, off), device, repeats)
        xg, og = x.clone().requires_grad_(True), off.clone().requires_grad_(True)

        def step():
            agg, corr = sifa_attention(xg, og)
            (agg.sum() + corr.sum()).backward()

        both = timed(step, device, repeats)
        results[layer] = {"shape": shape, "forward_ms": forward * 1e3, "forward_backward_ms": both * 1e3,
                          **peak_memory_mib(device, shape)}
    return results


def peak_memory_mib(device: str, shape) -> dict:
    """Memory of one forward+backward of the operator.

    saved_for_backward_MiB: tensors autograd keeps between forward and backward (exact).
    peak_MiB: on CUDA the allocator's peak; on CPU the process RSS sampled every 0.5 ms (large tensors
    are mmapped by the allocator, so RSS follows live tensors closely).
    """
    x = torch.randn(shape, device=device, requires_grad=True)
    off = torch.randn(shape[0], 18, *shape[2:], device=device, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        agg, corr = sifa_attention(x, off)
    result = {"saved_for_backward_MiB": sum(saved) / 2**20}
    del agg, corr
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        agg, corr = sifa_attention(x, off)
        (agg.sum() + corr.sum()).backward()
        result["peak_MiB"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        return result
    # In a fresh process: here freed tensors of the runs above would be reused without growing RSS.
    code = f"import bench_model; print(bench_model.sampled_rss_peak_mib({tuple(shape)}))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.abspath(__file__)))
    result["peak_MiB"] = float(child.stdout.strip().splitlines()[-1])
    return result


def sampled_rss_peak_mib(shape) -> float:
    """Growth of resident memory during one forward+backward, sampled every 0.5 ms."""
    warm = torch.randn(1, 8, 2, 4, 4, requires_grad=True)  # first-call costs (thread pools, kernels)
    sum(t.sum() for t in sifa_attention(warm, torch.zeros(1, 18, 2, 4, 4, requires_grad=True))).backward()
    x = torch.randn(shape, requires_grad=True)
    off = torch.randn(shape[0], 18, *shape[2:], requires_grad=True)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    agg, corr = sifa_attention(x, off)
    (agg.sum() + corr.sum()).backward()
    done.set()
    sampler.join()
    return (peak[0] - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="sifa_resnet50")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 rows")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc as it is (sifa keeps freed memory: sifa_cli/allocator.py)")
    args = parser.parse_args()
    if not args.plain_malloc:
        keep_freed_memory()  # as every sifa command does
    report = {
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "input": [1, 3, args.frames, args.size, args.size],
        "network": bench_network(args.model, args.device, args.repeats, args.frames, args.size, args.bf16),
        "operator": bench_operator(args.device, args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
