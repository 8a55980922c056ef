"""What `keep_freed_memory()` (sifa_cli/allocator.py) gains: forward passes and training steps timed in
fresh processes with glibc's default malloc and with freed memory kept, alternating, in one run.

    python benchmarks/bench_allocator.py                 # CPU, 3 rounds
    python benchmarks/bench_allocator.py --rounds 5

Cases: the shipped default's architecture (sifa_resnet_small, 16x128) prepared for inference, batches
of 8 and 1; SIFA-R50 (16x224) prepared, batch 1; one training step (forward, backward, AdamW) of
sifa_resnet_small, batch 8. Random weights (speed does not depend on them). Each child process times
one case for one allocator mode (median of --repeats after two warm-ups); the rounds alternate the
modes so a machine shared with other work slows both alike. Prints the median per mode, the ratio
plain / kept, and the machine's sgemm rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "small 16x128 inference, batch 8": ("sifa_resnet_small", 8, 128, "inference"),
    "small 16x128 inference, batch 1": ("sifa_resnet_small", 1, 128, "inference"),
    "SIFA-R50 16x224 inference, batch 1": ("sifa_resnet50", 1, 224, "inference"),
    "small 16x128 training step, batch 8": ("sifa_resnet_small", 8, 128, "train"),
}

_CHILD = """
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
mode, arch, batch, size, kind, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
if mode == "kept":
    from sifa_cli.allocator import keep_freed_memory
    assert keep_freed_memory()
import torch
from sifa_cli.models import create_model, prepare_for_inference
from sifa_cli.engine.optimization import classification_loss
torch.manual_seed(0)
model = create_model(arch, num_classes=7)
x = torch.randn(batch, 3, 16, size, size)
if kind == "inference":
    model = prepare_for_inference(model.eval())
    def step():
        with torch.inference_mode():
            model(x)
else:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.randint(0, 7, (batch,))
    def step():
        optimizer.zero_grad(set_to_none=True)
        classification_loss(model(x), target, 0.0).backward()
        optimizer.step()
step(); step()
times = []
for _ in range(repeats):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def child_seconds(mode: str, case: tuple, repeats: int) -> float:
    arch, batch, size, kind = case
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), mode, arch, str(batch), str(size), kind,
                          str(repeats)], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def sgemm_gmac_per_s() -> float:
    import torch

    a, b = torch.randn(3136, 1024), torch.randn(1024, 256)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    return 20 * 3136 * 1024 * 256 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    times = {name: {"plain": [], "kept": []} for name in CASES}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            for mode in ("plain", "kept"):
                times[name][mode].append(child_seconds(mode, case, args.repeats))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sgemm {sgemm_gmac_per_s():.1f} GMAC/s "
          f"(3136x1024x256 fp32), {args.rounds} rounds")
    print("| case | glibc default ms | freed memory kept ms | speed-up |")
    print("|---|---:|---:|---:|")
    for name, by_mode in times.items():
        plain, kept = statistics.median(by_mode["plain"]), statistics.median(by_mode["kept"])
        print(f"| {name} | {plain * 1e3:.1f} | {kept * 1e3:.1f} | {plain / kept:.2f}x |")


if __name__ == "__main__":
    main()
