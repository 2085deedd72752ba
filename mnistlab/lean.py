"""A hand-written training step for the lesson's MLP: Linear → ReLU → Linear, softmax cross-entropy.

Autograd records and replays a graph every step; for a model this small that bookkeeping is a large
part of the step. This module computes the same forward pass and the exact gradients directly (six
matrix products in all) into preallocated ``.grad`` tensors, and leaves the update to the optimizer.

The engine uses it when the model is an ``nn.Sequential`` of exactly ``[Standardize,] Flatten, Linear,
ReLU, Linear`` trained in one process; every other model goes through autograd. In float32 the result
is the gradient autograd computes, up to float rounding; with ``precision="bf16"`` the two large
products run in bfloat16 and the gradient is as close to float32's as autocast's is (both are checked
in ``tests/test_lean.py``). In bf16 the loop converts the training set to the step's input form once
(``stage``), instead of every batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mnistlab.models import Standardize


class LeanMLP:
    """``step(x, y) -> (logits, loss)``: forward, loss and gradients of a plain MLP, without autograd."""

    def __init__(self, model: nn.Sequential, label_smoothing: float = 0.0, precision: str = "fp32") -> None:
        layers = list(model)
        # bf16: the two large products (first layer forward, its weight gradient) run in bfloat16, as
        # under autocast; everything else, weights and optimizer state stay float32.
        self.low = torch.bfloat16 if precision == "bf16" else None
        self.standardize = layers.pop(0) if isinstance(layers[0], Standardize) else None
        _flatten, self.fc1, _relu, self.fc2 = layers
        self.smoothing = label_smoothing
        for p in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias):
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is exactly ``[Standardize,] Flatten, Linear, ReLU, Linear`` with trainable biases."""
        if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
            return False
        kinds = [type(m) for m in model]
        if kinds and kinds[0] is Standardize:
            kinds = kinds[1:]
        if kinds != [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]:
            return False
        layers = list(model)
        flatten, fc1, fc2 = layers[-4], layers[-3], layers[-1]
        params = [fc1.weight, fc1.bias, fc2.weight, fc2.bias]
        return (
            flatten.start_dim == 1
            and flatten.end_dim == -1
            and all(p is not None and p.requires_grad for p in params)
            and sum(1 for _ in model.parameters()) == 4
        )

    @torch.no_grad()
    def stage(self, x: torch.Tensor) -> torch.Tensor:
        """Images as the bf16 step reads them: flattened, standardized, in bfloat16; fp32: ``x`` itself.

        The conversion is what the bf16 step does to every batch (and what autocast does to the first layer's
        input), so converting the whole training set once gives the same bits and spares each step a pass
        over the batch; a batch gathered from the result has half the bytes. Done in slices, so the
        float32 intermediate is never the size of the data set.
        """
        if self.low is None:
            return x
        out = torch.empty(len(x), math.prod(x.shape[1:]), dtype=self.low, device=x.device)
        for i in range(0, len(x), 1024):
            part = x[i : i + 1024].reshape(-1, out.shape[1])
            out[i : i + 1024] = self.standardize(part) if self.standardize is not None else part
        return out

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, staged: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (batch x classes, a transposed view) and mean loss of the batch; the gradients land in the
        parameters' ``.grad``.

        ``staged``: ``x`` is a batch of ``stage``'s output (bf16 only), so it is used as it is.
        """
        n = x.shape[0]
        w1, b1, w2, b2 = self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias
        if self.low is not None:
            # bf16: the first layer's two products in bfloat16 (float32 accumulation on AMX / AVX512-BF16),
            # on the standardized input rounded to bf16, as under autocast; the bias added in float32.
            xb = x if staged else self.stage(x)
            h = torch.add(b1, torch.mm(xb, w1.to(self.low).t()))
        else:
            x = x.reshape(n, -1)
            # Standardize is folded into the first layer, so the standardized batch is never written out:
            # ((x - m) / s) @ w1.T + b1 = (x @ w1.T) / s + (b1 - (m / s) * w1.sum(1))
            inv, shift = 1.0, b1
            if self.standardize is not None:
                m, s = self.standardize.mean, self.standardize.std
                inv = 1.0 / float(s)
                shift = torch.addcmul(b1, w1.sum(1), m * -inv)
            h = torch.addmm(shift, x, w1.t(), alpha=inv)
        r = h.relu_()
        # The logits are computed as classes x batch: the softmax then runs along the contiguous axis's
        # columns, which is ~8x faster than over rows of 10 (~100 vs ~13 µs at batch 1024 here).
        logits = torch.addmm(b2.unsqueeze(1), w2, r.t())
        logp = torch.log_softmax(logits, dim=0)
        # d(mean loss)/d(logits) = (softmax - target) / n, target = (1 - ε)·one-hot + ε/classes
        eps, classes = self.smoothing, logits.shape[0]
        picked = logp.gather(0, y.unsqueeze(0))
        if eps:
            loss = -((1 - eps) * picked.sum() + eps / classes * logp.sum()) / n
        else:
            loss = -picked.sum() / n
        dz = logp.exp_()
        if eps:
            dz.sub_(eps / classes)
        dz.scatter_add_(0, y.unsqueeze(0), torch.full_like(picked, -(1 - eps)))
        dz.div_(n)
        torch.mm(dz, r, out=w2.grad)
        torch.sum(dz, 1, out=b2.grad)
        dh = torch.ops.aten.threshold_backward(torch.mm(dz.t(), w2), r, 0)
        torch.sum(dh, 0, out=b1.grad)
        if self.low is not None:
            w1.grad.copy_(torch.mm(dh.to(self.low).t(), xb))
        elif self.standardize is not None:
            # d/dw1 of the standardized layer: (dh.T @ x) / s - (m / s) · outer(db1, 1). It is written through
            # w1.grad's transpose, (x.T @ dh), which the matmul fills in place (dh.T @ x into w1.grad goes
            # through a temporary and a copy).
            torch.addmm((b1.grad * (-float(m) * inv)).unsqueeze(0), x.t(), dh, alpha=inv, out=w1.grad.t())
        else:
            torch.mm(x.t(), dh, out=w1.grad.t())
        return logits.t(), loss
