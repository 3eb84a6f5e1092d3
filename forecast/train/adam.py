"""Adam on the CPU, block by block: ``torch.optim.Adam(foreach=True)``'s arithmetic, element for element, in an
order that keeps each block of a large weight in the cache while its update runs.

On the CPU, torch's foreach ops loop over the tensors: the first moment of every weight is updated, then the second
moment of every weight, then a square root, and so on, seven passes over memory in all. A weight of millions of
elements (OLinear's embeddings, Flowformer's projections) leaves the cache between two passes, so each pass reads it
from memory again, and the square roots, allocated anew each step, may come from fresh pages. On this project's 2-core
CPU OLinear's update (4.5M elements) took 5.6-10.3 ms of its 52-58 ms step on ETTh1, varying from process to process
with the allocator's state. Here a weight of more than ``BLOCK`` elements runs the seven steps on one block (a few MB
across its tensors) before the next, so the first pass alone reads from memory: 3.8-5.0 ms, and OLinear's training
step is 1.06-1.08x faster (``benchmarks/adam_blocks.py``, ``before_after.py --name adam_blocks_olinear``). The
smaller weights stay in one call of torch's own foreach path, where a loop over them in Python would cost more than
the passes it saves.

Every element meets the same operations with the same scalars as in torch's foreach path: the weights, moments and
the state dict are the same bits (tested), and a checkpoint resumes with either optimizer. Options outside the
project's use (amsgrad, maximize, weight decay, complex or sparse weights, a tensor learning rate) are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.optim.adam import adam

BLOCK = 1 << 18  # elements: 1 MB per float32 tensor, ~5 MB for the weight, its gradient, the moments and the root


class BlockedAdam(torch.optim.Adam):
    """``torch.optim.Adam`` with foreach's arithmetic run block by block; for CPU weights."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),  # noqa: ANN001
                 eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["weight_decay"] or torch.is_tensor(group["lr"]):
                raise ValueError("BlockedAdam takes lr, betas and eps only (no amsgrad, maximize or weight decay)")
            beta1, beta2 = group["betas"]
            small: list[list[torch.Tensor]] = [[], [], [], [], []]  # weights, gradients, moments, steps
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or p.is_complex():
                    raise ValueError("BlockedAdam takes dense real weights")
                state = self._state(p)
                tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
                if p.numel() > BLOCK and all(t.is_contiguous() for t in tensors):
                    _update_blocks(tensors, state["step"], group["lr"], beta1, beta2, group["eps"])
                else:
                    for kept, t in zip(small, (*tensors, state["step"]), strict=True):
                        kept.append(t)
            if small[0]:  # the weights that fit in the cache: torch's own foreach path
                params, grads, exp_avgs, exp_avg_sqs, steps = small
                adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=True, amsgrad=False, beta1=beta1,
                     beta2=beta2, lr=group["lr"], weight_decay=0.0, eps=group["eps"], maximize=False)
        return loss

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:  # as torch's Adam initialises it (the step a CPU scalar when neither fused nor capturable)
            dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.tensor(0.0, dtype=dtype)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def _update_blocks(tensors: tuple[torch.Tensor, ...], step: torch.Tensor, lr: float, beta1: float, beta2: float,
                   eps: float) -> None:
    """One weight's update (weight, gradient and moments, all contiguous), block by block."""
    step += 1
    t = step.item()
    # The scalars exactly as torch's foreach path computes them (torch/optim/adam.py, _multi_tensor_adam).
    step_size = (lr / (1 - beta1**t)) * -1
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    for w, g, m, v in zip(*(_blocks(x) for x in tensors), strict=True):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2)
        v.addcmul_(g, g, value=1 - beta2)
        denom = torch.sqrt(v)
        denom.div_(bias_correction2_sqrt)
        denom.add_(eps)
        w.addcdiv_(m, denom, value=step_size)


def _blocks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """``t`` as consecutive flat blocks of ``BLOCK`` elements (views: updated in place)."""
    flat = t.view(-1)
    for start in range(0, flat.numel(), BLOCK):
        yield flat[start : start + BLOCK]
