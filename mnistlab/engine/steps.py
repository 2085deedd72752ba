"""One training step behind one interface: ``step(xb, yb) -> (logits, loss_sum)``.

Each strategy does forward, loss, gradients and the optimizer's update for one batch and returns the
batch's logits and its summed loss (float64, detached) for the running metrics. Which one trains is
decided once, in ``choose``: the hand-written MLP step (``mnistlab.lean``) for the lesson's MLP in one
process, data-parallel autograd when given a distributed context, plain autograd otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnistlab.devices import accumulator_dtype
from mnistlab.engine.optim import updater
from mnistlab.inference import autocast
from mnistlab.lean import LeanMLP

if TYPE_CHECKING:
    from mnistlab.distributed import Context


class Step(Protocol):
    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class LeanStep:
    """The lesson's MLP: exact gradients without autograd's graph (see ``mnistlab.lean``)."""

    def __init__(self, model: nn.Sequential, optimizer: torch.optim.Optimizer, smoothing: float, precision: str):
        self.lean = LeanMLP(model, smoothing, precision)
        self.optimizer = optimizer
        self.update = updater(optimizer)  # the fused Adam kernel without Optimizer.step's wrapping
        self.staged = False

    def stage(self, x: torch.Tensor) -> torch.Tensor:
        """The training images converted once as the step reads them (bf16: see ``LeanMLP.stage``).

        After this, ``step`` takes batches gathered from the result. The loop calls it only where the
        batches reach the step unchanged (no augmentation).
        """
        staged = self.lean.stage(x)
        self.staged = staged is not x
        return staged

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, loss = self.lean.step(xb, yb, staged=self.staged)
        self.update()
        return logits, loss.to(_acc(loss)) * len(yb)


class AutogradStep:
    """Any module through autograd, under bf16 autocast and in channels_last when asked."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.CrossEntropyLoss,
                 device: torch.device, precision: str, channels_last: bool) -> None:  # fmt: skip
        self.net, self.optimizer, self.loss_fn = net, optimizer, loss_fn
        self.device, self.precision, self.channels_last = device, precision, channels_last

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            logits = self.net(xb).float()
            loss = self.loss_fn(logits, yb)
            loss_sum = loss.detach().to(_acc(loss)) * len(yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits, loss_sum


class DDPStep(AutogradStep):
    """Each rank steps on its slice of the global batch; DDP averages the gradients over ranks."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.CrossEntropyLoss,
                 ctx: Context, precision: str, channels_last: bool) -> None:  # fmt: skip
        dev_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=dev_ids)  # makes every rank start from rank 0's weights
        super().__init__(net, optimizer, loss_fn, ctx.device, precision, channels_last)
        self.rank, self.world = ctx.rank, ctx.world_size
        self.global_n = 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the global batch ``idx``."""
        self.global_n = len(idx)
        return idx.tensor_split(self.world)[self.rank]

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            logits = self.net(xb).float()
            # Scaled so, the average over ranks is the gradient of the global batch's mean loss, as one
            # process computes it, even for an uneven last batch.
            loss_sum = nn.functional.cross_entropy(
                logits, yb, reduction="sum", label_smoothing=self.loss_fn.label_smoothing
            )
            loss = loss_sum * (self.world / self.global_n)
            loss_sum = loss_sum.detach().to(_acc(loss_sum))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits, loss_sum


def choose(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.CrossEntropyLoss, device: torch.device,
           precision: str, channels_last: bool, ctx: Context | None, lean: bool) -> AutogradStep | LeanStep:  # fmt: skip
    """The strategy for this model and process: DDP when given a context, the lean MLP step where it applies."""
    if ctx is not None:
        return DDPStep(model, optimizer, loss_fn, ctx, precision, channels_last)
    if lean and LeanMLP.supports(model):
        return LeanStep(model, optimizer, loss_fn.label_smoothing, precision)  # type: ignore[arg-type]
    return AutogradStep(model, optimizer, loss_fn, device, precision, channels_last)


def _acc(t: torch.Tensor) -> torch.dtype:
    return accumulator_dtype(t.device)  # float64 sums, float32 on MPS (no float64 there)
