"""Where to train and how to step: the device, the optimizer, and the learning rate as a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
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
    device: torch.device | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    fused = {"fused": True} if device is None or device.type in ("cpu", "cuda") else {}
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
