"""Training speed and accuracy on full MNIST, against a plain PyTorch loop measured in the same run.

- ``lesson`` preset through the engine vs the plain loop with the same settings (target: ≤ 1.1x its time).
- ``fast`` preset: test accuracy and training time (target ≥ 97.8% in ≤ 1.5 s; stretch ≤ 1.0 s), and its
  speed-up over the plain loop with the lesson's settings (target ≥ 6x), and over Keras when TensorFlow
  is installed (target ≥ 18x).
- the fast preset's precision is ``auto``: bf16 (the hand-written step's two large products in bfloat16)
  where the CPU has bf16 units, fp32 elsewhere; it runs again with ``--precision fp32``, what a CPU without
  bf16 units gets (on one without them the two rows are the same setting);
- the fast preset again with ``lean=False`` (autograd instead of the hand-written MLP step), to show
  what that step buys.
- GFLOP/s of the fast preset against this machine's measured float32 matmul peak (issue 16: ≥ 60%), and
  of the step's matrix products alone, the ceiling for any step of this model.
Medians of 3 runs (seeds 0, 1, 2). Training time excludes evaluation and start-up, for every contender.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from benchmarks.common import table
from mnistlab.config import from_preset
from mnistlab.datasets import mnist
from mnistlab.devices import resolve_precision
from mnistlab.engine import ACC, Trainer
from mnistlab.runs import build_for, load_dataset

# The MLP's training FLOPs per image: forward 2*(784*128 + 128*10); backward twice that, less the input gradient.
STEP_FLOPS_PER_IMAGE = 3 * 2 * (784 * 128 + 128 * 10) - 2 * 784 * 128

REPEAT = 3


def plain_loop(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, seed: int) -> tuple[float, float]:
    """The lesson's model and settings as a textbook PyTorch loop: batch 32, Adam 1e-3, 5 epochs."""
    torch.manual_seed(seed)
    X = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 784)
    Y = torch.from_numpy(y.astype(np.int64))
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    t = time.perf_counter()
    for _ in range(5):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            loss_fn(model(X[idx]), Y[idx]).backward()
            opt.step()
    elapsed = time.perf_counter() - t
    with torch.no_grad():
        acc = (model(torch.from_numpy(xt.astype(np.float32) / 255.0).reshape(-1, 784)).argmax(1).numpy() == yt).mean()
    return elapsed, float(acc)


def engine_run(preset: str, seed: int, lean: bool = True, **overrides: object) -> tuple[float, float, int]:
    config = from_preset(preset, seed=seed, **overrides)
    ds = load_dataset(config, progress=False)
    torch.manual_seed(seed)
    model = build_for(config, ds)
    trainer = Trainer(model, **{**config.trainer_kwargs(), "device": "cpu"}, verbose=0, lean=lean)
    # as a run does: the preset's held-out images (the last val_split of the training set) are not trained on
    trainer.fit(ds.x_train, ds.y_train, batch_size=config.batch_size, epochs=config.epochs,
                validation_split=config.val_split)  # fmt: skip
    acc = trainer.evaluate(ds.x_test, ds.y_test)[ACC]
    return trainer.train_time, acc, config.epochs


def keras_lesson(seed: int) -> tuple[float, float] | None:
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError:
        return None
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    (x, y), (xt, yt) = mnist.load_data()
    x, xt = x / 255.0, xt / 255.0
    model = tf.keras.models.Sequential(
        [
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    t = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    elapsed = time.perf_counter() - t
    return elapsed, float(model.evaluate(xt, yt, verbose=0)[1])


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
    return best / 1e9


def main() -> None:
    (x, y), (xt, yt) = mnist.load_data()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    plain = [plain_loop(x, y, xt, yt, s) for s in range(REPEAT)]
    lesson = [engine_run("lesson", s) for s in range(REPEAT)]
    fast = [engine_run("fast", s) for s in range(REPEAT)]
    fast_autograd = [engine_run("fast", s, lean=False) for s in range(REPEAT)]
    fast_fp32 = [engine_run("fast", s, precision="fp32") for s in range(REPEAT)]
    auto, _ = resolve_precision("auto", torch.device("cpu"))  # what the preset's precision="auto" takes here
    keras = [r for r in (keras_lesson(s) for s in range(REPEAT)) if r is not None]
    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    p_t, p_a = med(plain, 0), med(plain, 1)
    l_t, l_a = med(lesson, 0), med(lesson, 1)
    f_t, f_a = med(fast, 0), med(fast, 1)
    rows = [
        ["plain PyTorch loop, lesson settings", p_t, p_a, "1.0x"],
        ["mnistlab --preset lesson", l_t, l_a, f"{l_t / p_t:.2f}x the plain loop's time (target ≤ 1.1x)"],
        [f"mnistlab --preset fast ({auto} here)", f_t, f_a, f"{p_t / f_t:.1f}x faster than the plain loop (target ≥ 6x)"],
        ["  the same through autograd (lean=False)", med(fast_autograd, 0), med(fast_autograd, 1),
         f"the hand-written step is {med(fast_autograd, 0) / f_t:.2f}x faster"],
        ["mnistlab --preset fast --precision fp32", med(fast_fp32, 0), med(fast_fp32, 1),
         f"{p_t / med(fast_fp32, 0):.1f}x faster than the plain loop (a CPU without bf16 units trains so)"],
    ]  # fmt: skip
    if keras:
        k_t, k_a = med(keras, 0), med(keras, 1)
        rows.insert(
            0, ["Keras, the lesson's script", k_t, k_a, f"fast preset is {k_t / f_t:.1f}x faster (target ≥ 18x)"]
        )
    else:
        rows.append(["Keras", "-", "-", "TensorFlow not installed: not measured"])
    print(table(rows, ["MNIST MLP, median of 3 seeds", "train s", "test acc", "ratio"]))
    print("fast preset per seed: " + ", ".join(f"{t:.2f}s/{a:.4f}" for t, a, _ in fast))
    print("fast preset, fp32, per seed: " + ", ".join(f"{t:.2f}s/{a:.4f}" for t, a, _ in fast_fp32))
    every = min(a for _, a, _ in fast)
    print(f"fast preset: every seed ≥ 97.8% {'met' if every >= 0.978 else 'MISSED'} (worst {every:.2%}); "
          f"≤ 1.5 s {'met' if f_t <= 1.5 else 'MISSED'}; stretch ≤ 1.0 s {'met' if f_t <= 1.0 else 'missed'}")  # fmt: skip
    n_train = 60000 - from_preset("fast").validation_count(60000)
    flops = STEP_FLOPS_PER_IMAGE * n_train * fast[0][2]
    peak = matmul_peak()
    batch = from_preset("fast").batch_size
    for name, t, precision in (
        (f"fast preset ({auto})", f_t, auto),
        ("fast --precision fp32", med(fast_fp32, 0), "fp32"),
    ):
        ceiling = step_matmuls(batch, precision)
        print(f"{name}: {flops / t / 1e9:.1f} GFLOP/s achieved, {flops / t / 1e9 / peak:.0%} of the float32 matmul "
              f"peak here ({peak:.0f} GFLOP/s; target ≥ 60%); the step's matrix products alone at batch {batch}: "
              f"{ceiling:.0f} GFLOP/s ({ceiling / peak:.0%}), so the rest of the step is "
              f"{1 - flops / t / 1e9 / ceiling:.0%} of its time")  # fmt: skip


def step_matmuls(batch: int, precision: str = "fp32") -> float:
    """GFLOP/s of the MLP step's matrix products alone (forward, weight gradients, hidden gradient), the
    first layer's two in bfloat16 for ``precision="bf16"`` as the hand-written step runs them."""
    low = torch.bfloat16 if precision == "bf16" else torch.float32
    x, w1, w2 = torch.rand(batch, 784).to(low), torch.randn(128, 784), torch.randn(10, 128)
    h, dz, dh = torch.rand(batch, 128), torch.rand(10, batch), torch.rand(batch, 128)
    g1, g2 = torch.empty(128, 784), torch.empty(10, 128)

    def products() -> None:
        torch.mm(x, w1.to(low).t())
        torch.mm(w2, h.t())
        torch.mm(dz, h, out=g2)
        torch.mm(dz.t(), w2)
        if low is torch.float32:
            torch.mm(x.t(), dh, out=g1.t())
        else:
            g1.copy_(torch.mm(dh.to(low).t(), x))

    products()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(50):
            products()
        best = min(best, (time.perf_counter() - t) / 50)
    return STEP_FLOPS_PER_IMAGE * batch / best / 1e9
