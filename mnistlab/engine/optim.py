"""Where to train and how to step: the device, the optimizer, and the learning rate as a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.optim.adam as adam_module
import torch.optim.optimizer as optimizer_module
from torch import nn

from mnistlab.config import OPTIMIZERS, SCHEDULES
from mnistlab.errors import ConfigError


def lr_at(step: int, total: int, base: float, schedule: str, warmup: float = 0.25) -> float:
    """The learning rate at ``step`` of ``total``: a pure function, so resuming needs no scheduler state.

    >>> lr_at(0, 100, 1.0, "cosine"), lr_at(99, 100, 1.0, "step")
    (1.0, 0.010000000000000002)
    """
    if schedule == "constant" or total <= 1:
        return base
    t = step / max(total - 1, 1)
    if schedule == "onecycle":  # linear warm-up from base/25, cosine down to base/1e4
        if t < warmup:
            return base / 25 + (base - base / 25) * (t / warmup)
        u = (t - warmup) / max(1 - warmup, 1e-12)
        return base / 1e4 + (base - base / 1e4) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "step":  # ÷10 at 50% and 75% of training
        return base * (0.1 ** ((t >= 0.5) + (t >= 0.75)))
    raise ConfigError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")


def make_optimizer(
    name: str, params: Iterator[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
    device: torch.device | None = None, model: nn.Module | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    """The optimizer ``name`` over ``params``; ``muon`` needs the ``model`` (it tells hidden weights from the rest)."""
    fused = {"fused": True} if device is None or device.type in ("cpu", "cuda") else {}
    if name == "muon":
        if model is None:
            raise ConfigError("the muon optimizer needs the model (make_optimizer(..., model=))")
        return Muon(muon_groups(model, lr, weight_decay), lr=lr, fused=bool(fused))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


# The AdamW part of ``muon`` steps at this fraction of ``lr``: the best preset's CNN was measured with AdamW at
# 2e-2 and Muon at 2e-2, 5e-2 and 1e-1 (issue 16; session 7's closing note has the seeds).
MUON_ADAM_LR_RATIO = 0.4


def muon_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """``muon``'s parameter groups: the hidden layers' weights (every convolution kernel and dense matrix but
    the last layer's) by Muon at ``lr``; biases, batch norm and the output layer by AdamW at
    ``lr * MUON_ADAM_LR_RATIO`` with ``weight_decay``."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    hidden = {id(m.weight) for m in layers[:-1] if m.weight.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in hidden], "muon": True, "lr": lr, "weight_decay": 0.0},
        {"params": [p for p in params if id(p) not in hidden], "muon": False, "lr": lr * MUON_ADAM_LR_RATIO,
         "weight_decay": weight_decay},
    ]  # fmt: skip
    return [g for g in groups if g["params"]]


class Muon(torch.optim.Optimizer):
    """Muon (momentum orthogonalised by Newton-Schulz, Jordan et al. 2024) for hidden weights, AdamW for the rest.

    In a group with ``muon=True`` each weight, seen as a matrix (out × in·kernel), takes the Nesterov momentum
    (``momentum``) of its gradient, orthogonalised by ``ns_steps`` Newton-Schulz iterations (its singular values
    brought near 1: the directions kept, their scales evened out), times ``lr * sqrt(max(1, out / in))``. Other
    groups are AdamW (``betas``, ``eps``, decoupled ``weight_decay``). Keras 3 splits the work the same way
    (``keras.optimizers.Muon``). The state is plain tensors (``momentum_buffer``; ``step``, ``exp_avg``,
    ``exp_avg_sq``), so checkpoints save and resume it exactly; all of it is computed in the parameters' float32.

    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> [(g["muon"], len(g["params"])) for g in Muon(muon_groups(m, 0.05, 0.1), lr=0.05).param_groups]
    [(True, 1), (False, 3)]
    """

    def __init__(self, params: list[dict] | Iterator[nn.Parameter], lr: float = 0.02, momentum: float = 0.95,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, fused: bool = False) -> None:  # fmt: skip
        defaults = {"lr": lr, "momentum": momentum, "ns_steps": ns_steps, "betas": betas, "eps": eps,
                    "weight_decay": weight_decay, "muon": True, "fused": fused}  # fmt: skip
        super().__init__(params, defaults)
        if any(p.ndim < 2 for g in self.param_groups if g["muon"] for p in g["params"]):
            raise ConfigError("Muon steps matrices and kernels only: put biases and norms in a group with "
                              "muon=False (mnistlab.engine.optim.muon_groups does)")  # fmt: skip

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)
        return loss

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        beta, lr = group["momentum"], group["lr"]
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(beta).add_(p.grad)
            g = p.grad.add(buf, alpha=beta).reshape(len(p), -1)
            update = orthogonalize(g, group["ns_steps"])
            p.add_(update.view(p.shape), alpha=-lr * max(1.0, g.shape[0] / g.shape[1]) ** 0.5)

    def _adamw(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        fused = group["fused"] and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
        adam_module.adam(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [], [s["step"] for s in states], foreach=False, fused=fused, decoupled_weight_decay=True,
            amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False,
        )  # fmt: skip


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """``g`` with its singular values brought near 1 by a quintic Newton-Schulz iteration, whose coefficients
    trade exactness for speed: after 5 steps the values from the largest down to 1/100 of it land in about
    [0.7, 1.2] (as tests/test_engine.py checks); smaller ones are raised less."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.t()
    for _ in range(steps):
        s = x @ x.t()
        x = a * x + (b * s + c * s @ s) @ x
    return x if wide else x.t()


def updater(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step`` or, for a plain fused Adam, the same kernel called without its Python wrapping.

    For a model as small as the lesson's MLP, ``Optimizer.step``'s bookkeeping (hooks, profiling, grouping
    the tensors by device) costs as much as the fused update itself. The direct call runs the very kernel
    ``Adam(fused=True).step`` runs, on the optimizer's own state, so the weights are bit-identical and a
    checkpoint saves the same ``state_dict``. Anything else (another optimizer, hooks, amsgrad, several
    groups, the first step that creates the state) goes through ``optimizer.step``.
    """
    groups = optimizer.param_groups
    g = groups[0]
    plain = (
        type(optimizer) is torch.optim.Adam
        and len(groups) == 1
        and g.get("fused")
        and not (g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"])
        and not g.get("decoupled_weight_decay", False)
        and not isinstance(g["lr"], torch.Tensor)
        and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in g["params"])
        and hasattr(torch, "_fused_adam_")
    )
    if not plain:
        return optimizer.step
    params = g["params"]

    def update() -> None:
        states = [optimizer.state.get(p) for p in params]
        if (
            not all(states)
            or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or optimizer_module._global_optimizer_pre_hooks
            or optimizer_module._global_optimizer_post_hooks
        ):
            optimizer.step()
            return
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = g["betas"]
        torch._fused_adam_(
            params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [], steps, amsgrad=False, lr=g["lr"], beta1=float(beta1), beta2=float(beta2),
            weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip

    return update
