"""The fused Triton SIFA kernels against the plain definition (values and gradients).

Without a GPU (CI) the kernels run under Triton's interpreter on CPU tensors: it is chosen when the
kernels are decorated, so they run in one subprocess started with TRITON_INTERPRET=1
(tests/triton_interpret_worker.py) and this file compares what it returns with
`sifa_attention_reference` and autograd here. With a GPU the same kernels also run natively.
Interpreter cases are tiny: the interpreter runs every program instance in Python.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sifa_cli.models import ops
from sifa_cli.models.ops import sifa_attention_reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (optional: pip install triton)")
needs_cuda = pytest.mark.skipif(not (HAS_TRITON and torch.cuda.is_available()), reason="needs a CUDA GPU and triton")

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "sifa_ops_fixture.pt"
WORKER = Path(__file__).parent / "triton_interpret_worker.py"


def random_case(shape, k=3, scale=2.0, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n, c, t, h, w = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    offset = (torch.rand(n, 2 * k * k, t, h, w, generator=g, dtype=torch.float64) - 0.5) * 2 * scale
    return x.to(device, dtype), offset.to(device, dtype)


def output_grads(x, k, seed, with_corr=True):
    g = torch.Generator().manual_seed(seed + 100)
    n, c, t, h, w = x.shape
    grad_agg = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
    grad_corr = torch.randn(n, k * k, t, h, w, generator=g, dtype=torch.float64).to(x.dtype) if with_corr else None
    return grad_agg, grad_corr


def border_offsets():
    """Integer offsets: samples exactly on the frame's edges and rows/columns just outside, and far away."""
    x, offset = random_case((1, 3, 2, 4, 5), scale=1.0, seed=1)
    offset = offset.round()
    offset[:, 0] = -1.0  # tap 0 lands on y = -2 or exactly y = -1 (outside) for the first rows
    offset[:, 4] = 2.0  # tap 2 pushed down onto and past the last row
    offset[:, 5, :, 1] = 1000.0  # far outside to the right
    offset[:, 6, :, 2] = -1e6  # far outside at the top
    offset[:, 9, :, :, 0] = -1.0  # tap 4 (the centre) at x = -1 exactly in the first column
    offset[:, 15, :, :, 4] = 0.0  # tap 7 exactly on the last column
    return x, offset


def build_cases() -> dict:
    cases = {}

    def add(name, x, offset, k=3, dilation=1, seed=0, with_corr=True, **extra):
        grad_agg, grad_corr = output_grads(x, k, seed, with_corr)
        cases[name] = dict(x=x, offset=offset, kernel_size=k, dilation=dilation, grad_agg=grad_agg,
                           grad_corr=grad_corr, **extra)

    data = torch.load(FIXTURE, weights_only=True)
    add("fixture", data["x"], data["offset"])
    add("T=1", *random_case((1, 3, 1, 4, 5), seed=2), seed=2, with_corr=False)
    add("H=1", *random_case((1, 2, 2, 1, 6), seed=3), seed=3)
    add("W=1", *random_case((1, 2, 2, 5, 1), seed=4), seed=4)
    add("K=5", *random_case((1, 3, 2, 3, 4), k=5, seed=5), k=5, seed=5)
    add("K=1", *random_case((2, 2, 2, 3, 3), k=1, seed=6), k=1, seed=6)
    add("dilation 2, float32", *random_case((1, 3, 2, 4, 5), seed=7, dtype=torch.float32), dilation=2, seed=7)
    # C = 3 over channel tiles of 2 and 21 pixels over pixel tiles of 16: partial tiles on both axes.
    add("tiles", *random_case((1, 3, 2, 3, 7), seed=8), seed=8, block_c=2, block_p=16)
    add("borders", *border_offsets(), seed=9)
    add("non-contiguous", *random_case((1, 3, 2, 4, 3), seed=10), seed=10, non_contiguous=True)
    add("bfloat16", *random_case((1, 8, 2, 4, 4), seed=11, dtype=torch.bfloat16), seed=11)
    add("float16", *random_case((1, 8, 2, 4, 4), seed=12, dtype=torch.float16), seed=12)
    x, offset = random_case((1, 3, 2, 4, 5), seed=13)
    offset[0, 3, 1, 2, 2], offset[0, 8, 0, 0, 4], offset[0, 13, 1, 3, 1] = float("nan"), float("inf"), -float("inf")
    add("non-finite offsets", x, offset, seed=13)
    return cases


def on_a_kink(offset: torch.Tensor, k: int, dilation: int) -> torch.Tensor:
    """Offsets whose sample coordinate is a whole number other than -1 (shape of offset).

    There bilinear interpolation has a kink: the definition takes the slope towards the next pixel
    (floor), while grid_sample, which rescales coordinates to [-1, 1] and back, may round just below.
    """
    n, _, t, h, w = offset.shape
    pad = (dilation * (k - 1) + 1) // 2
    taps = torch.arange(k, dtype=torch.float64) * dilation - pad
    rows = torch.arange(h, dtype=torch.float64).view(h, 1) + taps.repeat_interleave(k).view(k * k, 1, 1, 1)
    cols = torch.arange(w, dtype=torch.float64).view(1, w) + taps.repeat(k).view(k * k, 1, 1, 1)
    base = torch.stack((rows.expand(k * k, 1, h, w), cols.expand(k * k, 1, h, w)), dim=1).reshape(2 * k * k, 1, h, w)
    position = offset.double().cpu() + base
    return ((position == position.round()) & (position != -1)).to(offset.device)


def reference_results(case: dict) -> dict:
    """The plain definition's outputs and gradients; at kinks, the offset gradient from just past them."""
    k, dilation = case["kernel_size"], case["dilation"]
    kink = on_a_kink(case["offset"], k, dilation)
    nudged = case["offset"] + kink.to(case["offset"].dtype) * 1e-7 if kink.any() else None
    results = {}
    for offset in (case["offset"], nudged):
        if offset is None:
            continue
        x = case["x"].clone().requires_grad_(True)
        offset = offset.clone().requires_grad_(True)
        agg, corr = sifa_attention_reference(x, offset, k, dilation)
        loss = (agg * case["grad_agg"]).sum()
        if case["grad_corr"] is not None:
            loss = loss + (corr * case["grad_corr"]).sum()
        grad_x, grad_offset = torch.autograd.grad(loss, (x, offset))
        if not results:
            results = {"agg": agg.detach(), "corr": corr.detach(), "grad_x": grad_x, "grad_offset": grad_offset}
        else:
            results["grad_offset_at_kinks"] = torch.where(kink, grad_offset, results["grad_offset"])
            results["kinks"] = kink
    return results


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Every case run once through the kernels under Triton's interpreter, in one subprocess."""
    folder = tmp_path_factory.mktemp("triton")
    cases = build_cases()
    torch.save(cases, folder / "cases.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", SIFA_KERNEL="triton", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(WORKER), str(folder / "cases.pt"), str(folder / "results.pt")],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return cases, torch.load(folder / "results.pt", weights_only=True)


def assert_matches(ours: dict, ref: dict, dtype: torch.dtype, name: str) -> None:
    for key in ("agg", "corr", "grad_x", "grad_offset"):
        got, want = ours[key], ref[key]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, key, got.dtype, want.dtype)
        if dtype == torch.float64:
            atol, rtol = 1e-10, 1e-10
        elif dtype == torch.float32:  # summation orders differ (atomic adds on a GPU)
            atol, rtol = 1e-4 * max(1.0, want.abs().max().item()), 1e-4
        else:  # both round the same float32 result to 16 bits
            atol, rtol = 2e-2 * want.abs().max().item(), 2e-2
        if key == "grad_offset" and "kinks" in ref:
            # At kinks the nudged reference is off by O(1e-7).
            want = ref["grad_offset_at_kinks"]
            torch.testing.assert_close(got[ref["kinks"]], want[ref["kinks"]], atol=max(atol, 1e-5), rtol=max(rtol, 1e-5),
                                       msg=lambda m: f"{name} {key} at kinks: {m}")
            got, want = got[~ref["kinks"]], want[~ref["kinks"]]
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"{name} {key}: {m}")


CASE_NAMES = ["fixture", "T=1", "H=1", "W=1", "K=5", "K=1", "dilation 2, float32", "tiles", "borders",
              "non-contiguous", "bfloat16", "float16"]


@needs_triton
@pytest.mark.parametrize("name", CASE_NAMES)
def test_interpreted_kernel_matches_definition(interpreted, name):
    cases, results = interpreted
    case, ours = cases[name], results[name]
    assert ours["kernel"] in ("triton", "triton (tiles set)")  # SIFA_KERNEL=triton picked it on CPU
    assert_matches(ours, reference_results(case), case["x"].dtype, name)


@needs_triton
def test_interpreted_kernel_matches_the_shared_fixture(interpreted):
    data = torch.load(FIXTURE, weights_only=True)
    ours = interpreted[1]["fixture"]
    assert (ours["agg"] - data["aggregation"]).abs().max().item() < 1e-10
    assert (ours["corr"] - data["correlation"]).abs().max().item() < 1e-10


@needs_triton
def test_interpreted_non_finite_offsets_give_nan_like_the_definition(interpreted):
    cases, results = interpreted
    case, ours = cases["non-finite offsets"], results["non-finite offsets"]
    ref_agg, ref_corr = sifa_attention_reference(case["x"], case["offset"])
    assert ref_corr.isnan().sum() == 3
    torch.testing.assert_close(ours["corr"], ref_corr, atol=1e-10, rtol=1e-10, equal_nan=True)
    torch.testing.assert_close(ours["agg"], ref_agg, atol=1e-10, rtol=1e-10, equal_nan=True)


@needs_triton
def test_interpreted_border_samples(interpreted):
    ours = interpreted[1]["borders"]
    # Tap 0 at y = -1 exactly (first row) and taps sent far away are outside: no weight, no gradient.
    assert ours["corr"][0, 0, :, 0].abs().max() == 0 and ours["grad_offset"][0, 0:2, :, 0].abs().max() == 0
    assert ours["corr"][0, 2, :, 1].abs().max() == 0 and ours["corr"][0, 3, :, 2].abs().max() == 0
    assert ours["corr"][0, 4, :, :, 0].abs().max() == 0  # the centre tap at x = -1 exactly
    assert ours["grad_offset"][0, 8:10, :, :, 0].abs().max() == 0
    assert ours["corr"][0, 7, :, :, 4].abs().max() > 0  # on the last column: inside


def test_cpu_tensors_never_pick_triton_unless_forced(monkeypatch):
    x, offset = random_case((1, 2, 2, 3, 3))
    monkeypatch.delenv("SIFA_KERNEL", raising=False)
    assert ops.select_kernel(x.requires_grad_(True), offset, 3, 1) == "reference"
    with torch.no_grad():  # one of the CPU inference kernels, never Triton
        assert ops.select_kernel(x, offset, 3, 1) in ("per-tap", "gather")


@needs_triton
def test_forcing_triton_on_cpu_without_the_interpreter_falls_back(monkeypatch):
    # Compiled Triton cannot run CPU tensors: forcing it without TRITON_INTERPRET keeps the plain kernel.
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton's interpreter")
    monkeypatch.setenv("SIFA_KERNEL", "triton")
    x, offset = random_case((1, 2, 2, 3, 3))
    assert ops.select_kernel(x.requires_grad_(True), offset, 3, 1) == "reference"


def test_package_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import torch\n"
        "from sifa_cli.models import ops\n"
        "x = torch.randn(1, 2, 2, 3, 3, requires_grad=True); off = torch.zeros(1, 18, 2, 3, 3)\n"
        "assert ops.select_kernel(x, off, 3, 1) == 'reference', ops.select_kernel(x, off, 3, 1)\n"
        "agg, corr = ops.sifa_attention(x, off); agg.sum().backward(); print('ok')\n"
    )
    env = dict(os.environ, SIFA_KERNEL="triton", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# Native kernels on a GPU


def cuda_case(shape, k=3, dilation=1, dtype=torch.float32, seed=0, scale=2.0):
    x, offset = random_case(shape, k=k, seed=seed, scale=scale)
    grad_agg, grad_corr = output_grads(x, k, seed)
    case = dict(x=x, offset=offset, kernel_size=k, dilation=dilation, grad_agg=grad_agg, grad_corr=grad_corr)
    return {key: (v.to("cuda", dtype) if torch.is_tensor(v) else v) for key, v in case.items()}


def native_results(case: dict) -> dict:
    x = case["x"].clone().requires_grad_(True)
    offset = case["offset"].clone().requires_grad_(True)
    k, dilation = case["kernel_size"], case["dilation"]
    assert ops.select_kernel(x, offset, k, dilation) == "triton"
    agg, corr = ops.sifa_attention(x, offset, k, dilation)
    loss = (agg * case["grad_agg"]).sum() + (corr * case["grad_corr"]).sum()
    grad_x, grad_offset = torch.autograd.grad(loss, (x, offset))
    return {"agg": agg.detach(), "corr": corr.detach(), "grad_x": grad_x, "grad_offset": grad_offset}


@needs_cuda
@pytest.mark.parametrize(
    "shape,k,dilation",
    [
        ((2, 5, 3, 5, 6), 3, 1),
        ((1, 3, 1, 4, 5), 3, 1),
        ((2, 2, 3, 1, 6), 3, 1),
        ((1, 2, 2, 5, 1), 3, 1),
        ((1, 4, 3, 4, 4), 5, 1),
        ((1, 3, 2, 5, 6), 3, 2),
        ((2, 1, 2, 3, 3), 1, 1),
        ((2, 70, 4, 14, 14), 3, 1),  # several channel and pixel tiles
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_kernel_matches_definition(shape, k, dilation, dtype):
    case = cuda_case(shape, k, dilation, dtype)
    assert_matches(native_results(case), reference_results(case), dtype, f"{shape} K={k} d={dilation}")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_kernel_low_precision(dtype):
    case = cuda_case((2, 64, 4, 14, 14), dtype=dtype, seed=3)
    assert_matches(native_results(case), reference_results(case), dtype, str(dtype))


@needs_cuda
def test_cuda_kernel_borders_and_fixture():
    x, offset = border_offsets()
    grad_agg, grad_corr = output_grads(x, 3, 9)
    case = {key: v.cuda() for key, v in dict(x=x, offset=offset, grad_agg=grad_agg, grad_corr=grad_corr).items()}
    case.update(kernel_size=3, dilation=1)
    assert_matches(native_results(case), reference_results(case), torch.float64, "borders")
    data = torch.load(FIXTURE, weights_only=True)
    agg, corr = ops.sifa_attention(data["x"].cuda(), data["offset"].cuda())
    assert (agg.cpu() - data["aggregation"]).abs().max().item() < 1e-10
    assert (corr.cpu() - data["correlation"]).abs().max().item() < 1e-10


@needs_cuda
def test_cuda_kernel_saves_a_quarter_of_the_reference_for_backward():
    def saved_bytes(fn):
        x, offset = random_case((2, 64, 4, 14, 14), dtype=torch.float32, device="cuda")
        x.requires_grad_(True)
        offset.requires_grad_(True)
        seen = {}

        def pack(t):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            agg, corr = fn(x, offset)
        (agg.sum() + corr.sum()).backward()
        return sum(seen.values())

    fused = saved_bytes(lambda x, o: ops.sifa_attention(x, o))
    plain = saved_bytes(lambda x, o: sifa_attention_reference(x, o))
    assert fused * 4 <= plain, (fused, plain)
