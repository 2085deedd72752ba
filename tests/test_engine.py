"""The training engine on real MNIST subsets: Keras-like API, reproducibility, schedules."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from mnistlab.datasets import mnist
from mnistlab.engine import ACC, History, Trainer, lr_at
from mnistlab.errors import ConfigError
from mnistlab.models import mlp


@pytest.fixture(scope="module")
def data():
    (x, y), (xt, yt) = mnist.load_data()
    return (x[:4000], y[:4000]), (xt[:1000], yt[:1000])


def fit(data, **kw):
    (x, y), val = data
    torch.manual_seed(kw.pop("init_seed", 0))
    trainer = Trainer(kw.pop("model", None) or mlp(), kw.pop("optimizer", "adam"), kw.pop("lr", 1e-3), verbose=0, **kw)
    return trainer, trainer.fit(x, y, batch_size=64, epochs=2, validation_data=val)


def test_history_has_the_lessons_keys(data) -> None:
    _, h = fit(data)
    assert isinstance(h, History)
    assert list(h.history) == ["loss", ACC, "val_loss", f"val_{ACC}"]
    assert all(len(v) == 2 for v in h.history.values()) and h.epoch == [0, 1]
    assert h.history["loss"][1] < h.history["loss"][0]
    assert h.history[f"val_{ACC}"][-1] > 0.85


def test_same_seed_same_numbers_and_other_seed_differs(data) -> None:
    t1, h1 = fit(data, seed=3)
    t2, h2 = fit(data, seed=3)
    _, h3 = fit(data, seed=4)
    assert h1.history == h2.history
    assert all(
        torch.equal(a, b) for a, b in zip(t1.model.state_dict().values(), t2.model.state_dict().values(), strict=True)
    )
    assert h1.history["loss"] != h3.history["loss"]


def test_predict_returns_probabilities_and_evaluate_matches(data) -> None:
    trainer, h = fit(data)
    (_, _), (xt, yt) = data
    p = trainer.predict(xt)
    assert p.shape == (1000, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    ev = trainer.evaluate(xt, yt)
    assert ev[ACC] == pytest.approx(float((p.argmax(1) == yt).mean()))
    assert ev[ACC] == pytest.approx(h.history[f"val_{ACC}"][-1])
    # The lesson divides by 255 first: float input in 0..1 gives the same answer.
    assert np.allclose(trainer.predict(xt / 255.0), p, atol=1e-6)


def test_subclassed_module_and_optimizer_object_train(data) -> None:
    class MyModel(nn.Module):  # the lesson's class-style model
        def __init__(self) -> None:
            super().__init__()
            self.flatten = nn.Flatten()
            self.d1 = nn.Linear(784, 128)
            self.d2 = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.d2(torch.relu(self.d1(self.flatten(x))))

    torch.manual_seed(0)
    model = MyModel()
    _, h = fit(data, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert h.history[f"val_{ACC}"][-1] > 0.85


def test_label_smoothing_and_schedules_train(data) -> None:
    for schedule in ("onecycle", "cosine", "step"):
        _, h = fit(data, schedule=schedule, lr=3e-3, label_smoothing=0.1)
        assert h.history[f"val_{ACC}"][-1] > 0.85, schedule


def test_orthogonalize_evens_out_singular_values_a_hundredfold_apart() -> None:
    from mnistlab.engine.optim import orthogonalize

    torch.manual_seed(0)
    for shape in ((16, 9), (32, 288), (64, 288), (128, 784)):  # the CNN's kernels as matrices, the MLP's layer
        u, _, v = torch.linalg.svd(torch.randn(shape), full_matrices=False)
        g = u @ torch.diag(torch.logspace(-1, 1, min(shape))) @ v  # singular values 0.1 .. 10
        s = torch.linalg.svdvals(orthogonalize(g))
        assert s.min() > 0.65 and s.max() < 1.25, (shape, s.min(), s.max())


def test_muon_steps_hidden_kernels_by_muon_and_the_rest_by_adamw(data) -> None:
    from mnistlab.engine.optim import MUON_ADAM_LR_RATIO, Muon
    from mnistlab.models import cnn

    model = cnn(width=8)
    trainer, h = fit(data, model=model, optimizer="muon", lr=0.05, weight_decay=0.1, schedule="onecycle")
    assert h.history[f"val_{ACC}"][-1] > 0.95
    opt = trainer.optimizer
    assert isinstance(opt, Muon)
    muon, adam = opt.param_groups
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [id(p) for p in muon["params"]] == [id(p) for p in kernels] and muon["muon"]
    assert any(p is model[-1].weight for p in adam["params"]) and not adam["muon"] and adam["weight_decay"] == 0.1
    assert trainer.base_lrs == [0.05, 0.05 * MUON_ADAM_LR_RATIO]
    assert set(opt.state[kernels[0]]) == {"momentum_buffer"}
    assert set(opt.state[model[-1].weight]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(ConfigError, match="matrices and kernels only"):
        Muon(model.parameters())  # every parameter as Muon's, biases and norms too
    # one Muon step moves a kernel by about lr * sqrt(max(1, out/in)) * its orthogonalised direction
    w = kernels[1].detach().clone()
    kernels[1].grad = torch.randn_like(w)
    for group in opt.param_groups:
        group["lr"] = 0.05 if group["muon"] else 0.0
    opt.state[kernels[1]]["momentum_buffer"].zero_()
    opt.step()
    step = (kernels[1].detach() - w).reshape(len(w), -1)
    s = torch.linalg.svdvals(step / 0.05)
    assert s.min() > 0.6 and s.max() < 1.25


def test_lr_schedules_shape() -> None:
    total = 1000
    one = [lr_at(s, total, 1.0, "onecycle", 0.25) for s in range(total)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0, rel=1e-2) and one[-1] < 1e-3
    assert lr_at(0, total, 1.0, "cosine") == 1.0 and lr_at(total - 1, total, 1.0, "cosine") < 1e-6
    assert lr_at(800, total, 1.0, "step") == pytest.approx(0.01)
    assert all(lr_at(s, total, 0.5, "constant") == 0.5 for s in (0, 500, 999))
    assert not any(math.isnan(v) for v in one)


def test_progress_lines_are_plain_when_not_a_tty(data) -> None:
    (x, y), val = data
    trainer = Trainer(mlp(), verbose=1)
    trainer.stream = io.StringIO()
    trainer.fit(x, y, batch_size=100, epochs=2, validation_data=val)
    lines = trainer.stream.getvalue().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("40/40 ━━━━━━━━━━━━━━━━━━━━ ") and "/step - loss: " in lines[1]
    assert f"val_{ACC}: " in lines[1] and "\r" not in trainer.stream.getvalue()


def test_validation_freq(data) -> None:
    (x, y), val = data
    h = Trainer(mlp(), verbose=0).fit(x, y, batch_size=128, epochs=4, validation_data=val, validation_freq=2)
    assert len(h.history["loss"]) == 4 and len(h.history["val_loss"]) == 2 and h.val_epoch == [1, 3]


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"schedule": "bogus"}, "unknown schedule"),
        ({"label_smoothing": 1.5}, "label smoothing"),
        ({"lr": 0}, "learning rate"),
    ],
)
def test_bad_trainer_arguments(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        Trainer(mlp(), **kw)


def test_bad_optimizer_and_fit_arguments(data) -> None:
    with pytest.raises(ConfigError, match="unknown optimizer 'adamx'"):
        Trainer(mlp(), "adamx")
    (x, y), _ = data
    with pytest.raises(ConfigError, match="must be ≥ 1"):
        Trainer(mlp(), verbose=0).fit(x, y, batch_size=0)
    with pytest.raises(ConfigError, match="equal length"):
        Trainer(mlp(), verbose=0).fit(x, y[:10])


def test_the_engine_stays_short() -> None:
    """Issue 14's shape: ``fit`` reads in one screen (≤ 40 lines) and no engine function is over 60 lines."""
    import ast
    from pathlib import Path

    import mnistlab.engine

    lengths: dict[str, int] = {}
    for path in Path(mnistlab.engine.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.name}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    fit = [n for name, n in lengths.items() if name.startswith("loop.py") and name.endswith(" fit")]
    assert fit and fit[0] <= 40, fit
    assert max(lengths.values()) <= 60, sorted(lengths.items(), key=lambda kv: kv[1])[-3:]
