"""The hand-written MLP step computes what autograd computes, and the engine picks it only where it applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnistlab.datasets import mnist
from mnistlab.engine import ACC, Trainer
from mnistlab.lean import LeanMLP
from mnistlab.models import cnn, mlp
from mnistlab.tensors import images_to_tensor


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    (x, y), _ = mnist.load_data()
    return images_to_tensor(x[:300]), torch.from_numpy(y[:300].astype("int64"))


@pytest.mark.parametrize("normalize", [None, [0.1307, 0.3081]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_lean_gradients_equal_autograds(batch, normalize, smoothing: float) -> None:
    x, y = batch
    torch.manual_seed(0)
    model = mlp(normalize=normalize)
    for p in model.parameters():  # away from the initial point, so that some ReLUs are off
        p.data.add_(torch.randn_like(p) * 0.05)
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)(model(x), y)
    loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    logits, lean_loss = LeanMLP(model, smoothing).step(x, y)
    assert torch.allclose(logits, model(x), atol=1e-5)
    assert lean_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip((p.grad for p in model.parameters()), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4), (got - want).abs().max()


def test_supports_only_the_plain_mlp() -> None:
    assert LeanMLP.supports(mlp()) and LeanMLP.supports(mlp(normalize=[0.5, 0.5]))
    assert LeanMLP.supports(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)))
    assert not LeanMLP.supports(cnn(width=4))
    assert not LeanMLP.supports(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10)))
    assert not LeanMLP.supports(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 64, bias=False), nn.ReLU(), nn.Linear(64, 10))
    )

    class Doubled(nn.Sequential):  # a subclass with its own forward is not the plain MLP
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    assert not LeanMLP.supports(Doubled(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)))
    frozen = mlp()
    frozen[1].weight.requires_grad_(False)
    assert not LeanMLP.supports(frozen)


def test_lean_and_autograd_training_agree() -> None:
    (x, y), (xt, yt) = mnist.load_data()
    results = []
    for lean in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(mlp(), "adam", 2e-3, label_smoothing=0.1, seed=0, verbose=0, lean=lean)
        h = trainer.fit(x[:6000], y[:6000], batch_size=64, epochs=2, validation_data=(xt[:2000], yt[:2000]))
        results.append((h.history, trainer.model.state_dict()))
    (h_lean, w_lean), (h_auto, w_auto) = results
    # Float rounding differs between the two, so the runs drift apart a little, but no more.
    assert h_lean[f"val_{ACC}"][-1] == pytest.approx(h_auto[f"val_{ACC}"][-1], abs=0.01)
    assert h_lean["loss"][0] == pytest.approx(h_auto["loss"][0], rel=1e-3)
    assert all(torch.allclose(w_lean[k], w_auto[k], atol=2e-3) for k in w_lean)


@pytest.mark.parametrize("normalize", [None, [0.1307, 0.3081]])
def test_lean_bf16_gradients_are_as_accurate_as_autocast(batch, normalize) -> None:
    # bf16 runs the two large products in bfloat16, as autocast does. Both are approximations of the
    # float32 gradient; the hand-written one must be about as close to it as autocast's.
    x, y = batch
    torch.manual_seed(0)
    model = mlp(normalize=normalize)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def grads(bf16: bool) -> list[torch.Tensor]:
        for p in model.parameters():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss_fn(model(x).float(), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    exact, autocast = grads(False), grads(True)
    for p in model.parameters():
        p.grad = None
    _, lean_loss = LeanMLP(model, 0.1, precision="bf16").step(x, y)
    assert lean_loss.item() == pytest.approx(loss_fn(model(x), y).item(), rel=1e-2)
    for got, ref, want in zip((p.grad for p in model.parameters()), autocast, exact, strict=True):
        assert got.dtype == torch.float32
        err, ref_err = ((got - want).norm() / want.norm()).item(), ((ref - want).norm() / want.norm()).item()
        assert err < max(2 * ref_err, 1e-3) and err < 3e-2, (err, ref_err)


@pytest.mark.parametrize("normalize", [None, [0.1307, 0.3081]])
def test_staged_bf16_batches_give_the_same_bits_as_raw_ones(batch, normalize) -> None:
    # The loop converts the training set once (stage) and gathers bf16 batches from it; a step on such a
    # batch must be the step on the raw float32 batch, bit for bit (resume and reproducibility rest on it).
    x, y = batch
    torch.manual_seed(0)
    model = mlp(normalize=normalize)
    lean = LeanMLP(model, 0.1, precision="bf16")
    staged = lean.stage(x)
    assert staged.dtype == torch.bfloat16 and staged.shape == (len(x), 784)
    if normalize:  # standardized before the rounding, as autocast feeds the first layer
        assert torch.equal(staged, model[0](x).reshape(len(x), -1).bfloat16())
    idx = torch.tensor([5, 17, 3, 250, 42])
    runs = []
    for xb, was_staged in ((x[idx], False), (staged[idx], True)):
        logits, loss = lean.step(xb, y[idx], staged=was_staged)
        runs.append([logits.clone(), loss.clone(), *(p.grad.clone() for p in model.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert LeanMLP(model, 0.1).stage(x) is x  # fp32 reads the batches as they are


def _adam_pair(**kw: object) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    import copy

    torch.manual_seed(0)
    a = mlp()
    b = copy.deepcopy(a)
    return a, b, torch.optim.Adam(a.parameters(), lr=1e-2, **kw), torch.optim.Adam(b.parameters(), lr=1e-2, **kw)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_direct_fused_adam_is_bit_identical_to_optimizer_step(batch, weight_decay: float) -> None:
    from mnistlab.engine.optim import updater

    x, y = batch
    a, b, opt_a, opt_b = _adam_pair(fused=True, weight_decay=weight_decay)
    update = updater(opt_b)
    assert update != opt_b.step  # the direct kernel call, not the optimizer's own step
    lean_a, lean_b = LeanMLP(a, 0.1), LeanMLP(b, 0.1)
    for i in range(6):
        for group in (opt_a.param_groups[0], opt_b.param_groups[0]):
            group["lr"] = 1e-2 * (i + 1) / 6  # a schedule changes the rate between steps
        lean_a.step(x, y)
        opt_a.step()
        lean_b.step(x, y)
        update()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        assert all(torch.equal(opt_a.state[p][k], opt_b.state[q][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_direct_adam_steps_aside_for_anything_else() -> None:
    from mnistlab.engine.optim import updater

    for kw in ({}, {"fused": True, "amsgrad": True}, {"foreach": True}):
        _, _, opt, _ = _adam_pair(**kw)
        assert updater(opt) == opt.step, kw
    sgd = torch.optim.SGD(mlp().parameters(), lr=0.1)
    assert updater(sgd) == sgd.step
    # a hook registered after the updater was made still runs: the direct path hands over to step()
    _, model, _, opt = _adam_pair(fused=True)
    update = updater(opt)
    calls: list[int] = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    update()  # the first step creates the state through step()
    update()
    assert len(calls) == 2


def test_the_loop_stages_the_training_set_once_without_changing_a_bit(monkeypatch) -> None:
    from mnistlab.engine import steps

    (x, y), _ = mnist.load_data()
    staged_shapes: list[tuple[torch.dtype, tuple[int, ...]]] = []
    original = steps.LeanStep.stage

    def recording(self: steps.LeanStep, data: torch.Tensor) -> torch.Tensor:
        out = original(self, data)
        staged_shapes.append((out.dtype, tuple(out.shape)))
        return out

    def weights(stage: object) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(steps.LeanStep, "stage", stage)
        torch.manual_seed(0)
        trainer = Trainer(mlp(normalize=[0.1307, 0.3081]), "adam", 1e-2, precision="bf16", seed=0, verbose=0)
        trainer.fit(x[:3000], y[:3000], batch_size=256, epochs=2)
        return trainer.model.state_dict()

    staged, per_batch = weights(recording), weights(lambda self, data: data)
    assert staged_shapes == [(torch.bfloat16, (3000, 784))]  # once per fit, not per epoch or batch
    assert all(torch.equal(staged[k], per_batch[k]) for k in staged)
