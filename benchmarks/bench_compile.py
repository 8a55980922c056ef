"""Does torch.compile pay off on top of `prepare_for_inference`? (Why `sifa predict` has no --compile.)

    python benchmarks/bench_compile.py                                   # SIFA-R50 16x224 and the default 16x128
    python benchmarks/bench_compile.py --models sifa_resnet_small:128 --repeats 20

For each model: the prepared model in eager mode against torch.compile of it (inductor,
dynamic=False), fp32, batch 1, inference mode, timed in alternating rounds after a warm-up; the
compile time and the largest output difference are printed too. The channels-last SIFA step stays
outside the compiled graph (torch.compiler.disable): inductor fails on it in torch 2.13 (a
ValueRangeError with dynamic shapes, an allocation check with freezing on).
"""

from __future__ import annotations

import argparse
import time

import torch

import sifa_cli.models.inference as inference
from sifa_cli.models import create_model, prepare_for_inference


def timed(model, x, repeats: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sifa_resnet50:224", "sifa_resnet_small:128"],
                        help="NAME:SIZE, 16-frame clips")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per round; the best counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    inference.sifa_step_channels_last = torch.compiler.disable(inference.sifa_step_channels_last)
    # Every block between two SIFA steps is its own graph, one per input shape: let all of them compile.
    torch._dynamo.config.recompile_limit = 256
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 1")
    for item in args.models:
        name, size = item.split(":")
        torch.manual_seed(0)
        prepared = prepare_for_inference(create_model(name).eval())
        x = torch.randn(1, 3, 16, int(size), int(size))
        started = time.perf_counter()
        compiled = torch.compile(prepared, dynamic=False)
        with torch.inference_mode():
            out_compiled = compiled(x)[0]
            out_eager = prepared(x)[0]
        compile_s = time.perf_counter() - started
        eager, fast = float("inf"), float("inf")
        for _ in range(args.rounds):
            eager = min(eager, timed(prepared, x, args.repeats))
            fast = min(fast, timed(compiled, x, args.repeats))
        print(f"{name} 16x{size}: eager {eager * 1e3:.1f} ms, compiled {fast * 1e3:.1f} ms "
              f"(x{eager / fast:.2f}), compile {compile_s:.0f} s, max |diff| {(out_eager - out_compiled).abs().max():.1e}")


if __name__ == "__main__":
    main()
