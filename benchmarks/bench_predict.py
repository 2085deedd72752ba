"""Recognising real pictures: photo-like digits and digits drawn like a person, our preprocessing vs the lesson's.

The photo-like test set (``mnistlab.photolike``): MNIST test digits printed large as dark ink on paper
of any shade under uneven light, off-centre, small or large, pencil-grey or pen-black, blurred, noisy,
dusty, JPEG-compressed. Three sets of different digits and renderings (three seeds) are each measured
once; the table shows the median and the range. The baseline, measured in the same run on the same
pictures with the same models, is the lesson's app: the whole picture resized to 28×28 and thresholded
at 200 (or inverted). Preprocessing time per picture is compared the same way.

Models: the fast preset (the lesson's MLP, trained here in seconds) and the CNN (``best`` preset, 1 epoch
without augmentation, trained here: 5-15 minutes on two CPU cores). ``MNISTLAB_BENCH_CNN_RUN=RUN`` uses
a CNN run you already have instead; ``MNISTLAB_BENCH_PHOTOS`` sets the photos per seed (default 600).
A PNG of the pictures the CNN (or MLP) got wrong is written to ``MNISTLAB_BENCH_OUT`` (default: a
temporary folder, printed).

    python -m benchmarks.bench_predict
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SEEDS = (7, 8, 9)


def _train(tmp: Path) -> dict[str, Path]:
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    runs = {}
    t = time.perf_counter()
    runs["mlp (fast preset)"] = tmp / "mlp"
    train_run(from_preset("fast"), runs["mlp (fast preset)"], verbose=0)
    print(f"trained the fast MLP in {time.perf_counter() - t:.0f}s", flush=True)
    given = os.environ.get("MNISTLAB_BENCH_CNN_RUN")
    if given:
        runs["cnn (given run)"] = Path(given)
    else:
        t = time.perf_counter()
        runs["cnn (best, 1 epoch)"] = tmp / "cnn"
        train_run(from_preset("best", epochs=1, augment=""), runs["cnn (best, 1 epoch)"], verbose=0)
        print(f"trained the CNN in {time.perf_counter() - t:.0f}s", flush=True)
    return runs


def main() -> None:
    from mnistlab.datasets import mnist
    from mnistlab.errors import ImageError
    from mnistlab.photolike import draw_digit, photo_set
    from mnistlab.plots import image_grid
    from mnistlab.predict import Predictor
    from mnistlab.preprocess import lesson_image

    n = int(os.environ.get("MNISTLAB_BENCH_PHOTOS", "600"))
    out_dir = Path(os.environ.get("MNISTLAB_BENCH_OUT") or tempfile.mkdtemp(prefix="bench-predict-"))
    (_, _), (x_test, y_test) = mnist.load_data()
    with tempfile.TemporaryDirectory() as tmp:
        predictors = {name: Predictor(run) for name, run in _train(Path(tmp)).items()}
    first = next(iter(predictors.values()))

    acc: dict[tuple[str, str], list[float]] = {}
    times: dict[str, list[float]] = {"ours": [], "lesson": []}
    wrong: list[tuple[np.ndarray, str]] = []
    for k, seed in enumerate(SEEDS):
        lo = k * n
        photos, labels = photo_set(x_test[lo:], y_test[lo:], n, seed=seed)
        t = time.perf_counter()
        prepared = []
        for p in photos:
            try:
                prepared.append(first.prepare(p))
            except ImageError:  # "no digit found": counts as wrong below
                prepared.append(None)
        times["ours"].append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        lesson = {"lesson (threshold 200)": np.stack([lesson_image(p) for p in photos])}
        times["lesson"].append((time.perf_counter() - t) / n)
        lesson["lesson (inverted)"] = np.stack([lesson_image(p, threshold=None) for p in photos])
        ok = [i for i, p in enumerate(prepared) if p is not None]
        for name, pred in predictors.items():
            probs = pred.predict_prepared([prepared[i] for i in ok])
            guess = np.full(n, -1)
            guess[ok] = probs.argmax(1)
            acc.setdefault((name, "ours"), []).append(float(np.mean(guess == labels)))
            for way, xs in lesson.items():
                acc.setdefault((name, way), []).append(float(np.mean(pred.loaded.predict(xs).argmax(1) == labels)))
            if name == list(predictors)[-1] and k == 0:
                wrong = [(prepared[i].image, f"{labels[i]}→{guess[i]}") for i in ok if guess[i] != labels[i]]
                wrong += [(np.zeros((28, 28), np.uint8), f"{labels[i]}: none") for i in range(n) if prepared[i] is None]
        print(f"seed {seed}: {n} photos, {n - len(ok)} with no digit found", flush=True)

    print(f"\nphoto-like digits: {len(SEEDS)} sets × {n}; accuracy median [min, max] over the sets")
    header = (
        f"{'model':<22} {'ours':>22} {'lesson (threshold 200)':>24} {'lesson (inverted)':>20} {'ours / lesson':>14}"
    )
    print(header)
    print("-" * len(header))
    for name in predictors:
        cells = []
        for way in ("ours", "lesson (threshold 200)", "lesson (inverted)"):
            v = acc[(name, way)]
            cells.append(f"{statistics.median(v):.4f} [{min(v):.3f}, {max(v):.3f}]")
        ratio = statistics.median(acc[(name, "ours")]) / max(
            statistics.median(acc[(name, "lesson (threshold 200)")]), 1e-9
        )
        print(f"{name:<22} {cells[0]:>22} {cells[1]:>24} {cells[2]:>20} {ratio:>13.1f}x")
    ours_ms, lesson_ms = statistics.median(times["ours"]) * 1e3, statistics.median(times["lesson"]) * 1e3
    print(
        f"\npreprocessing per picture (decode included), median of {len(SEEDS)} sets: ours {ours_ms:.1f} ms, "
        f"lesson {lesson_ms:.1f} ms ({ours_ms / lesson_ms:.1f}x)"
    )

    # Digits drawn like a person: thin to bold strokes, centred or small in a corner, a little wobble.
    rng = np.random.default_rng(0)
    cases = [(d, w, b) for d in range(10) for w in (3, 8, 18, 30)
             for b in ((0.2, 0.12, 0.8, 0.88), (0.05, 0.05, 0.4, 0.45), (0.55, 0.45, 0.95, 0.95))]  # fmt: skip
    drawings = [draw_digit(d, size=400, width=w, box=b, rng=rng) for d, w, b in cases]
    truth = np.array([d for d, _, _ in cases])
    for name, pred in predictors.items():
        got = np.array([p.index for p in pred.predict(drawings, errors="keep")])
        print(f"drawn digits, {name}: {np.mean(got == truth):.4f} of {len(cases)} (thin to bold strokes, 3 places)")

    if wrong:
        path = out_dir / "predict_mistakes.png"
        images, titles = zip(*wrong[:60], strict=True)
        image_grid(np.stack(images), titles, path, cols=12, title=f"photo-like digits {list(predictors)[-1]} got wrong")
        print(f"\nthe inputs it got wrong (true→predicted): {path}")


if __name__ == "__main__":
    main()
