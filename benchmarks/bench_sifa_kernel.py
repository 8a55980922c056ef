"""The fused Triton SIFA kernel against the plain (grid_sample) definition on a GPU.

    python benchmarks/bench_sifa_kernel.py                 # all sections
    python benchmarks/bench_sifa_kernel.py --batch 8 --repeats 50 --no-sweep

Shapes are what the SIFA step sees in SIFA-R50 for 16x224 clips (T = 4 after the stem; layer4_dual
runs at half the temporal length and layer3's spatial size). For each: forward and forward+backward
time (median of CUDA-event timings after warm-up), bytes autograd saves for backward (unique storages,
counted with saved_tensors_hooks) and the peak of allocated memory during forward+backward, for
float32 and bfloat16. A correctness section compares values and gradients with the definition first.
Every section catches its own errors and goes on, so one run reports all it can.
Needs only torch, triton and sifa_cli.models.ops (run from the checkout root or with the package installed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sifa_cli.models import ops  # noqa: E402
from sifa_cli.models.ops import sifa_attention_reference  # noqa: E402


def shapes(batch: int) -> dict:
    return {
        "layer2 (C=128, 28x28)": (batch, 128, 4, 28, 28),
        "layer3 (C=256, 14x14)": (batch, 256, 4, 14, 14),
        "layer4 (C=512, 7x7)": (batch, 512, 4, 7, 7),
        "layer4_dual (C=512, T=2, 14x14)": (batch, 512, 2, 14, 14),
    }


def inputs(shape, dtype, seed=0, scale=2.0, k=3):
    g = torch.Generator(device="cuda").manual_seed(seed)
    n, c, t, h, w = shape
    x = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dtype)
    off = ((torch.rand((n, 2 * k * k, t, h, w), generator=g, device="cuda") - 0.5) * 2 * scale).to(dtype)
    return x.requires_grad_(True), off.requires_grad_(True)


def section(title):
    def wrap(fn):
        def run(*args, **kwargs):
            print(f"\n== {title}", flush=True)
            try:
                fn(*args, **kwargs)
            except Exception:  # keep going: one run should report every section it can
                print(f"   FAILED:\n{traceback.format_exc()}", flush=True)
        return run
    return wrap


def triton_fn(block_c=None, block_p=None, num_warps=None):
    from sifa_cli.models.ops_triton import sifa_attention_triton

    return lambda x, off, k=3, d=1: sifa_attention_triton(x, off, k, d, block_c, block_p, num_warps)


def forward_backward(fn, x, off, grad_agg, grad_corr, k=3, d=1):
    agg, corr = fn(x, off, k, d)
    return torch.autograd.grad((agg, corr), (x, off), (grad_agg, grad_corr))


def cuda_time_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def saved_bytes(fn, x, off) -> int:
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        agg, corr = fn(x, off)
    del agg, corr
    return sum(seen.values())


def peak_bytes(fn, x, off, grad_agg, grad_corr) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    grads = forward_backward(fn, x, off, grad_agg, grad_corr)
    torch.cuda.synchronize()
    del grads
    return torch.cuda.max_memory_allocated() - base


def max_diffs(a_fn, b_fn, x, off, k, d, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        agg, corr = b_fn(x, off, k, d)
    grad_agg = torch.randn(agg.shape, generator=g, device="cuda").to(x.dtype)
    grad_corr = torch.randn(corr.shape, generator=g, device="cuda").to(x.dtype)
    out = {}
    results = []
    for fn in (a_fn, b_fn):
        agg, corr = fn(x, off, k, d)
        gx, go = torch.autograd.grad((agg, corr), (x, off), (grad_agg, grad_corr))
        results.append((agg, corr, gx, go))
    for name, a, b in zip(("O", "A", "dx", "doffset"), *results):
        scale = b.float().abs().max().item() or 1.0
        out[name] = (a.float() - b.float()).abs().max().item() / scale
    return out


@section("environment")
def environment():
    import triton

    print(f"   device: {torch.cuda.get_device_name()}  capability {torch.cuda.get_device_capability()}")
    print(f"   torch {torch.__version__}, triton {triton.__version__}, SIFA_KERNEL={os.environ.get('SIFA_KERNEL', 'auto')}")
    x, off = inputs((1, 8, 2, 5, 5), torch.float32)
    print(f"   dispatch picks: training {ops.select_kernel(x, off, 3, 1)!r}", end="")
    with torch.no_grad():
        print(f", inference {ops.select_kernel(x.detach(), off.detach(), 3, 1)!r}")


@section("correctness (max |difference| / max |reference|, values and gradients)")
def correctness(batch):
    fused = triton_fn()
    cases = [("odd (2,5,3,5,6) K3", (2, 5, 3, 5, 6), 3, 1), ("T=1 H=1", (2, 3, 1, 1, 7), 3, 1),
             ("K5 dil2 (1,7,3,6,5)", (1, 7, 3, 6, 5), 5, 2), ("K1", (2, 3, 2, 4, 4), 1, 1)]
    cases += [(name, shape, 3, 1) for name, shape in shapes(min(batch, 2)).items()]
    worst = 0.0
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        for name, shape, k, d in cases:
            try:
                x, off = inputs(shape, dtype, k=k)
                diffs = max_diffs(fused, sifa_attention_reference, x, off, k, d)
                ok = all(v <= tol for v in diffs.values())
                worst = max(worst, max(diffs.values()) / tol)
                text = "  ".join(f"{key} {value:.1e}" for key, value in diffs.items())
                print(f"   {'ok  ' if ok else 'BAD '} {str(dtype)[6:]:9s} {name:34s} {text}  (tolerance {tol:.0e})", flush=True)
            except Exception as error:
                print(f"   FAILED {dtype} {name}: {type(error).__name__}: {error}", flush=True)
    print(f"   worst difference / tolerance: {worst:.2f}")


@section("speed and memory (median ms; saved = bytes autograd keeps for backward)")
def speed(batch, warmup, repeats):
    fused = triton_fn()
    impls = {"reference": sifa_attention_reference, "triton": fused}
    for dtype in (torch.float32, torch.bfloat16):
        for name, shape in shapes(batch).items():
            try:
                x, off = inputs(shape, dtype)
                grad_agg = torch.randn_like(x)
                grad_corr = torch.randn((shape[0], 9) + shape[2:], device="cuda", dtype=dtype)
                row = {}
                for impl, fn in impls.items():
                    with torch.no_grad():
                        fwd = cuda_time_ms(lambda: fn(x, off, 3, 1), warmup, repeats)
                    both = cuda_time_ms(lambda: forward_backward(fn, x, off, grad_agg, grad_corr), warmup, repeats)
                    row[impl] = (fwd, both, saved_bytes(fn, x, off), peak_bytes(fn, x, off, grad_agg, grad_corr))
                (rf, rb, rs, rp), (tf, tb, ts, tp) = row["reference"], row["triton"]
                print(f"   {str(dtype)[6:]:8s} N={batch} {name:32s} fwd {rf:7.3f} -> {tf:7.3f} ms ({rf / tf:4.1f}x)   "
                      f"fwd+bwd {rb:7.3f} -> {tb:7.3f} ms ({rb / tb:4.1f}x)   "
                      f"saved {rs / 2**20:7.1f} -> {ts / 2**20:6.1f} MiB ({ts / rs:.2f})   "
                      f"peak {rp / 2**20:7.1f} -> {tp / 2**20:6.1f} MiB", flush=True)
            except Exception as error:
                print(f"   FAILED {dtype} {name}: {type(error).__name__}: {error}", flush=True)


@section("tile sweep, float32 forward+backward ms (block_c x block_p / warps; default 16x64/8)")
def sweep(batch, warmup, repeats):
    for name, shape in list(shapes(batch).items())[:2]:
        x, off = inputs(shape, torch.float32)
        grad_agg = torch.randn_like(x)
        grad_corr = torch.randn((shape[0], 9) + shape[2:], device="cuda")
        results = []
        for block_c, block_p, warps in [(None, None, None), (16, 64, 4), (16, 32, 4), (8, 64, 4), (32, 32, 8),
                                        (32, 64, 8), (16, 128, 8), (64, 32, 8), (8, 128, 8), (32, 128, 16)]:
            label = f"{block_c}x{block_p}/{warps}" if block_c else "default"
            try:
                fn = triton_fn(block_c, block_p, warps)
                ms = cuda_time_ms(lambda: forward_backward(fn, x, off, grad_agg, grad_corr), warmup, repeats)
                results.append((ms, label))
            except Exception as error:
                print(f"   FAILED {label}: {type(error).__name__}: {error}", flush=True)
        text = "  ".join(f"{label} {ms:.3f}" for ms, label in sorted(results))
        print(f"   {name}: {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-sweep", action="store_true", help="skip the tile-size sweep")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_sifa_kernel.py needs a CUDA GPU (torch.cuda.is_available() is False)")
        sys.exit(1)
    environment()
    correctness(args.batch)
    speed(args.batch, args.warmup, args.repeats)
    if not args.no_sweep:
        sweep(args.batch, args.warmup, max(5, args.repeats // 3))


if __name__ == "__main__":
    main()
