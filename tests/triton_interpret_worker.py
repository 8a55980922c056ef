"""Runs the Triton SIFA kernels under Triton's interpreter on CPU tensors (used by test_ops_triton.py).

    TRITON_INTERPRET=1 SIFA_KERNEL=triton python tests/triton_interpret_worker.py CASES.pt RESULTS.pt

The interpreter is chosen when a kernel is decorated, i.e. when sifa_cli.models.ops_triton is first
imported, so it must run in a process whose environment has TRITON_INTERPRET=1 from the start. For
each case (x, offset, kernel_size, dilation, gradients of the two outputs, optional tile sizes) it
saves both outputs and the gradients of x and offset; the test compares them with the plain definition.
"""

from __future__ import annotations

import sys

import torch

from sifa_cli.models import ops


def run_case(case: dict) -> dict:
    x = case["x"].clone().requires_grad_(True)
    offset = case["offset"].clone().requires_grad_(True)
    k, dilation = case["kernel_size"], case["dilation"]
    xi, oi = x, offset
    if case.get("non_contiguous"):
        xi = x.transpose(3, 4).contiguous().transpose(3, 4) * 1
        oi = offset.transpose(3, 4).contiguous().transpose(3, 4) * 1
        assert not xi.is_contiguous() and not oi.is_contiguous()
    if case.get("block_c") or case.get("block_p"):
        from sifa_cli.models.ops_triton import sifa_attention_triton

        kernel = "triton (tiles set)"
        agg, corr = sifa_attention_triton(xi, oi, k, dilation, block_c=case.get("block_c"), block_p=case.get("block_p"))
    else:
        kernel = ops.select_kernel(xi, oi, k, dilation)
        agg, corr = ops.sifa_attention(xi, oi, k, dilation)
    loss = (agg * case["grad_agg"]).sum()
    if case.get("grad_corr") is not None:
        loss = loss + (corr * case["grad_corr"]).sum()
    grad_x, grad_offset = torch.autograd.grad(loss, (x, offset))
    return {"kernel": kernel, "agg": agg.detach(), "corr": corr.detach(), "grad_x": grad_x, "grad_offset": grad_offset}


def main(cases_path: str, results_path: str) -> None:
    from sifa_cli.models import ops_triton

    assert ops_triton.INTERPRETED, "set TRITON_INTERPRET=1 before starting this worker"
    cases = torch.load(cases_path, weights_only=True)
    torch.save({name: run_case(case) for name, case in cases.items()}, results_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
