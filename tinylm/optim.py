"""Muon: momentum, then the nearest orthogonal matrix, for the hidden weight matrices.

AdamW scales every weight's step by its own gradient history. Muon (Jordan et al., 2024)
treats a weight matrix as a whole: it keeps a momentum of the gradient, as SGD does, and
replaces that matrix by the orthogonal matrix nearest to it (the same singular vectors, every
singular value 1). A step then moves the layer's output equally in every direction the
gradient points to, instead of mostly along the few directions that dominate it: a small
model learns more per step. Five Newton-Schulz iterations approximate the orthogonal matrix
with matrix products alone.

Muon is for the matrices inside the blocks. The embedding (a lookup table whose rows move
one token at a time; here also the output head), the positions, the biases and the norms'
gains keep AdamW: ``MuonWithAdamW`` steps both as one optimizer.

``torch.optim.Muon`` runs the iteration in bf16, which a CPU without bf16 units emulates,
many times slower than fp32; ``orthogonalize`` runs it in fp32 on a CPU and in bf16 on a GPU.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

#: The quintic Newton-Schulz coefficients of Jordan et al.: they push every singular value
#: into about 0.7-1.2 in five iterations, which trains as well as exactly 1.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The orthogonal matrix nearest to ``g`` (approximately): ``U V^T`` of ``g = U S V^T``.

    ``g`` may be a stack of matrices of one shape (``k x rows x cols``): each is orthogonalized
    on its own, in one batched product per iteration instead of one per matrix.

    >>> g = torch.randn(8, 32)
    >>> s = torch.linalg.svdvals(orthogonalize(g))
    >>> bool(((s > 0.6) & (s < 1.3)).all())
    True
    """
    a, b, c = NEWTON_SCHULZ
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # every singular value at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weight matrices: Nesterov momentum, orthogonalized, decoupled weight decay.

    The step of a ``rows x cols`` matrix is scaled by ``0.2 * sqrt(max(rows, cols))`` (the
    "match_rms_adamw" rule of ``torch.optim.Muon``): its RMS is then about that of an AdamW
    step, so one ``lr`` and one schedule serve both optimizers.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float,
                 momentum: float = 0.95, weight_decay: float = 0.0, ns_steps: int = 5) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      ns_steps=ns_steps))
        for group in self.param_groups:
            if any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon steps 2-D weight matrices only; give the rest to AdamW")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, beta = group["lr"], group["momentum"]
            # the matrices of one shape (a tall one transposed) share their iterations: a
            # model's layers repeat their shapes, and each product costs a wake-up of the
            # CPU's threads, which on a small model takes longer than the arithmetic
            by_shape: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - beta)
                g = p.grad.lerp(buf, beta)  # Nesterov
                g = g.T if g.size(0) > g.size(1) else g
                by_shape.setdefault(tuple(g.shape), []).append((p, g))
            for pairs in by_shape.values():
                updates = orthogonalize(torch.stack([g for _, g in pairs]), group["ns_steps"])
                for (p, _), update in zip(pairs, updates):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(update.T if p.size(0) > p.size(1) else update,
                           alpha=-lr * 0.2 * math.sqrt(max(p.shape)))


class MuonWithAdamW:
    """Muon on the blocks' weight matrices and AdamW on every other parameter, stepped, zeroed,
    saved and loaded as one optimizer; ``param_groups`` lists the groups of both, so the
    trainer sets one learning rate for all."""

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("not the state of Muon with AdamW (a checkpoint of another optimizer)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
