"""SIFA-Nets beside the video models a user already knows, measured in one process.

    python benchmarks/bench_peers.py                                   # CPU, fp32, batch 1
    python benchmarks/bench_peers.py --device cuda --precision bf16 --batch-size 8 --rounds 20
    python benchmarks/bench_peers.py --models tsn_r50_8,sifa_resnet50,r3d_18 --rounds 5

Every model gets random weights, eval mode and torch.inference_mode, the same batch size and the
clip it is used with: 16x224 for the SIFA-Nets, s3d and mvit_v2_s, 16x112 for r3d_18 and
r2plus1d_18, 8 frames of 224x224 for TSN-R50-8 (a 2D ResNet-50 run on each frame, the frame scores
averaged). SIFA-Nets run as built and "(prepared)": through `prepare_for_inference`, what `sifa
predict` runs; TSN-R50-8 runs as built and tuned alike (BatchNorm folded, channels-last), so the
prepared SIFA rows have a fair baseline too. After a warm-up, --rounds rounds run each model once
per round, in turn, so that load from other processes falls on all of them alike; the best round counts (load only slows things
down) and the median is shown beside it.

GMACs come from torch.utils.flop_counter.FlopCounterMode over one forward pass (MACs = FLOPs / 2):
convolutions, matrix products and attention. Sampling (grid_sample, SIFA's step), pooling,
normalisation and elementwise operations are not counted. "of gemm rate" divides the model's
MACs/s by the GEMM rate of the same device and precision measured in the same run, so the figures
carry to other machines. Ratios are to TSN-R50-8.

The torchvision rows need the optional extra `pip install 'sifa[peers]'` (a torchvision release
matching your torch). A CUDA build of torchvision whose compiled ops cannot load on a CPU-only torch
still works here: the video models use none of those ops.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from sifa_cli.engine.device import autocast, resolve_device
from sifa_cli.models import create_model, prepare_for_inference

BASELINE = "tsn_r50_8"
TUNED_BASELINE = "tsn_r50_8 (BN folded, channels-last)"
# What `sifa predict` runs: the model from prepare_for_inference.
PREPARED = "sifa_resnet50 (prepared)"
PREPARED_OFF = "sifa_resnet50 (prepared, SIFA off)"


# ---------------------------------------------------------------------------------------------
# TSN-R50: a plain 2D ResNet-50 (torchvision's layout and parameter names, stride in the 3x3
# convolution), applied to every frame of the clip; the clip's logits are the frames' mean.


class _Bottleneck2d(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 v1.5 for single images N,3,H,W (loads torchvision's resnet50 state dict strictly)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
            layer = [_Bottleneck2d(inplanes, planes, stride, downsample)]
            layer += [_Bottleneck2d(planes * 4, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            inplanes = planes * 4
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TSN(nn.Module):
    """Temporal segment network at test time: a 2D network on each frame of N,3,T,H,W, scores averaged.

    channels_last=True feeds the frames channels-last (pair it with `tuned_tsn`)."""

    def __init__(self, frame_model: nn.Module, channels_last: bool = False):
        super().__init__()
        self.frame_model = frame_model
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        return self.frame_model(frames).view(n, t, -1).mean(dim=1)


def tuned_tsn(model: nn.Module) -> nn.Module:
    """TSN-R50 given what prepare_for_inference gives SIFA-Net: BatchNorm folded into the convolutions
    (torch.fx's fuse) and channels-last weights and frames, so the SIFA rows are compared with a TSN
    tuned alike as well as with the plain one."""
    from torch.fx.experimental.optimization import fuse

    frame_model = fuse(model.frame_model).to(memory_format=torch.channels_last)
    return TSN(frame_model, channels_last=True).eval()


# ---------------------------------------------------------------------------------------------
# torchvision, optional


def import_torchvision_video() -> tuple[Optional[types.ModuleType], str]:
    """torchvision.models.video, or None, and a note on what happened.

    A torchvision wheel built for CUDA links its compiled ops against torch's CUDA libraries; on a
    CPU-only torch they do not load, torchvision notices that and carries on, but its
    _meta_registrations module then registers fake kernels for ops that were never defined and
    `import torchvision` dies with "operator torchvision::nms does not exist". The video models use
    none of those ops, so the import is retried with that module left out.
    """
    try:
        import torchvision.models.video as video
        return video, f"torchvision {_version('torchvision')}"
    except ImportError as exc:
        return None, f"torchvision is not importable ({exc}): pip install 'sifa[peers]' for those rows"
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        first_error = str(exc).splitlines()[0]
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    try:
        import torchvision.models.video as video
    except Exception as exc:  # noqa: BLE001 - any failure here only costs the optional rows
        return None, f"torchvision could not be imported ({first_error}; then {exc}): its rows are skipped"
    return video, (f"torchvision {_version('torchvision')}: its compiled ops did not load on this torch "
                   f"({first_error}); imported without them (the video models do not use them)")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------------------------
# The rows


@dataclass
class Peer:
    name: str
    frames: int
    size: int
    build: Callable[[], nn.Module]
    needs_torchvision: bool = False
    prepare: Callable[[nn.Module], nn.Module] = lambda model: model  # eval model in, the model to time out
    fixed_input: Optional[tuple[int, int]] = None  # (frames, size) the model only accepts


@dataclass
class Measurement:
    peer: Peer
    gmacs: float = 0.0  # per clip
    seconds: list[float] = field(default_factory=list)  # per forward pass of a batch
    skipped: Optional[str] = None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def sifa(name: str, frames: int):
    return lambda: create_model(name, num_classes=400, clip_length=frames)


def peers(frames: int, size: int, small_size: int, tsn_frames: int, video) -> list[Peer]:
    def tv(name: str):
        return lambda: getattr(video, name)(num_classes=400)

    def sifa_off(model: nn.Module) -> nn.Module:
        model.set_sifa_enabled(False)
        return model

    def prepared_sifa_off(model: nn.Module) -> nn.Module:
        return prepare_for_inference(sifa_off(model))

    return [
        Peer(BASELINE, tsn_frames, size, lambda: TSN(ResNet50(num_classes=400))),
        Peer(TUNED_BASELINE, tsn_frames, size, lambda: TSN(ResNet50(num_classes=400)), prepare=tuned_tsn),
        Peer("sifa_resnet50", frames, size, sifa("sifa_resnet50", frames)),
        Peer("sifa_resnet50 (SIFA off)", frames, size, sifa("sifa_resnet50", frames), prepare=sifa_off),
        Peer(PREPARED, frames, size, sifa("sifa_resnet50", frames), prepare=prepare_for_inference),
        Peer(PREPARED_OFF, frames, size, sifa("sifa_resnet50", frames), prepare=prepared_sifa_off),
        Peer("sifa_resnet_small", frames, size, sifa("sifa_resnet_small", frames)),
        Peer("sifa_resnet_small (prepared)", frames, size, sifa("sifa_resnet_small", frames),
             prepare=prepare_for_inference),
        Peer("sifa_resnet_tiny", frames, size, sifa("sifa_resnet_tiny", frames)),
        Peer("r2plus1d_18", frames, small_size, tv("r2plus1d_18"), needs_torchvision=True),
        Peer("r3d_18", frames, small_size, tv("r3d_18"), needs_torchvision=True),
        Peer("s3d", frames, size, tv("s3d"), needs_torchvision=True),
        Peer("mvit_v2_s", frames, size, tv("mvit_v2_s"), needs_torchvision=True, fixed_input=(16, 224)),
    ]


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 2) -> float:
    """Best MACs per second of an n x n x n matrix product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return n**3 / best


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} torch threads, {torch.backends.cpu.get_cpu_capability()}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per model after the counted one")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--small-size", type=int, default=112, help="frame size for r3d_18 and r2plus1d_18")
    parser.add_argument("--tsn-frames", type=int, default=8)
    parser.add_argument("--models", default="", help="comma-separated subset of the rows (the baseline always runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    autocast(device, args.precision)  # refuses a precision the device lacks before any work

    video, torchvision_note = import_torchvision_video()
    rows = peers(args.frames, args.size, args.small_size, args.tsn_frames, video)
    if args.models:
        wanted = {name.strip() for name in args.models.split(",") if name.strip()}
        unknown = wanted - {p.name for p in rows}
        if unknown:
            parser.error(f"unknown --models {', '.join(sorted(unknown))}; rows: {', '.join(p.name for p in rows)}")
        rows = [p for p in rows if p.name in wanted or p.name == BASELINE]

    measurements = [Measurement(p) for p in rows]
    active: list[tuple[Measurement, nn.Module, Tensor]] = []
    torch.manual_seed(0)
    for m in measurements:
        peer = m.peer
        if peer.needs_torchvision and video is None:
            m.skipped = "torchvision not importable"
            continue
        if peer.fixed_input and peer.fixed_input != (peer.frames, peer.size):
            m.skipped = f"accepts only {peer.fixed_input[0]}x{peer.fixed_input[1]} clips"
            continue
        model = peer.prepare(peer.build().to(device).eval())
        x = torch.randn(args.batch_size, 3, peer.frames, peer.size, peer.size, device=device)
        try:
            with torch.inference_mode(), autocast(device, args.precision):
                counter = FlopCounterMode(display=False)
                with counter:
                    model(x)
                m.gmacs = counter.get_total_flops() / 2 / args.batch_size / 1e9
                for _ in range(args.warmup):
                    model(x)
            sync(device)
        except RuntimeError as exc:  # e.g. a clip too small for the model's pooling
            if peer.name == BASELINE:
                raise
            m.skipped = f"failed: {str(exc).splitlines()[0]}"
            continue
        active.append((m, model, x))

    # The GEMM rate is measured in every round too, so that it sees the same load as the models.
    gemm_n = 8192 if device.type == "cuda" else 4096
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    fp32_rates, low_rates = [], []
    for _ in range(args.rounds):
        fp32_rates.append(gemm_rate(device, torch.float32, gemm_n))
        if low is not None:
            low_rates.append(gemm_rate(device, low, gemm_n))
        for m, model, x in active:
            with torch.inference_mode(), autocast(device, args.precision):
                sync(device)
                started = time.perf_counter()
                model(x)
                sync(device)
            m.seconds.append(time.perf_counter() - started)

    fp32_rate = max(fp32_rates)
    rate = max(low_rates) if low is not None else fp32_rate
    print(f"device: {describe_device(device)}; torch {torch.__version__}; {torchvision_note}")
    print(f"precision {args.precision}, batch {args.batch_size}, {args.rounds} rounds, best round counts")
    gemm_line = f"fp32 sgemm rate ({gemm_n}^3, same run): {fp32_rate / 1e9:.1f} GMAC/s"
    if low is not None:
        gemm_line += f"; {args.precision} gemm rate: {rate / 1e9:.1f} GMAC/s"
    if device.type == "cuda" and args.precision == "fp32":
        gemm_line += (f" (TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, "
                      f"cuDNN convolutions {torch.backends.cudnn.allow_tf32})")
    print(gemm_line)
    print()
    print("| model | clip | GMACs/clip | latency ms (best) | median ms | clips/s | of gemm rate "
          "| latency / TSN | GMACs / TSN | clips/s / TSN |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = measurements[0]
    assert base.peer.name == BASELINE and base.seconds
    for m in measurements:
        peer = m.peer
        clip = f"{peer.frames}x{peer.size}"
        if m.skipped:
            print(f"| {peer.name} | {clip} | skipped: {m.skipped} | | | | | | | |")
            continue
        clips_per_s = args.batch_size / m.best
        base_clips_per_s = args.batch_size / base.best
        share = m.gmacs * 1e9 * clips_per_s / rate
        print(f"| {peer.name} | {clip} | {m.gmacs:.2f} | {m.best * 1e3:.0f} | {m.median * 1e3:.0f} | "
              f"{clips_per_s:.2f} | {share:.0%} | {m.best / base.best:.2f} | {m.gmacs / base.gmacs:.2f} | "
              f"{clips_per_s / base_clips_per_s:.2f} |")
    by_name = {m.peer.name: m for m in measurements if m.seconds}
    on, off = by_name.get("sifa_resnet50"), by_name.get("sifa_resnet50 (SIFA off)")
    if on and off:
        print(f"\nthe SIFA step: {1 - off.best / on.best:.0%} of SIFA-R50's forward (best rounds)")
    prepared, prepared_off = by_name.get(PREPARED), by_name.get(PREPARED_OFF)
    if prepared and prepared_off:
        print(f"the SIFA step: {1 - prepared_off.best / prepared.best:.0%} of the prepared SIFA-R50's forward")
    tuned = by_name.get(TUNED_BASELINE)
    if prepared and tuned:
        print(f"prepared SIFA-R50 / {TUNED_BASELINE}: {prepared.best / tuned.best:.2f} (latency, best rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
