"""Recognising real pictures: how fast (decode / prepare / model) and how well, against the code before issue 19.

**Speed.** Phone-like photos of 500-800 px a side (JPEG) and 280×280 canvas drawings (PNG, what the web page
sends), per picture: decoding, preparing (the photo recipe) and the model, one picture at a time in one
process; then ``predict`` on a folder of the photos (``Predictor.predict``: threads, batches).
Times are CPU seconds of this process (``time.process_time``: on a shared machine wall-clock time measures
the neighbours too), except the folder, which is wall-clock (it runs on every core). Decode and prepare are
each timed where they run, picture after picture (each then finds the caches as the other left them: the
decoder runs slower there than in a loop of its own, which is shown too, with the prepare time it would
leave by difference).

**Accuracy.** The photo-like test set (``mnistlab.photolike``): MNIST test digits printed large as dark ink on
paper of any shade under uneven light, off-centre, small or large, pencil-grey or pen-black, blurred, noisy,
dusty, JPEG-compressed; three sets of different digits and renderings (three seeds); the median and range.
Then 120 digits drawn like a person (pen 3 to 30 px, centred or small in a corner).

**Baselines, measured in the same run on the same pictures and models:** "before" is the photo pipeline of
commit ``BASELINE`` (hand-written NumPy at 384 px), read from git into a temporary module; "lesson" is the
lesson's app (the whole picture resized to 28×28 and thresholded at 200, or inverted).

Models: the fast preset (the lesson's MLP, trained here in seconds) and the CNN (``best`` preset, 1 epoch
without augmentation, trained here: 5-15 minutes on two CPU cores; ``MNISTLAB_BENCH_CNN_RUN=RUN`` uses a run
you have, ``MNISTLAB_BENCH_CNN_RUN=none`` skips it). ``MNISTLAB_BENCH_PHOTOS`` sets the photos per seed (default
600), ``MNISTLAB_BENCH_SPEED`` the pictures timed per kind (default 200). A PNG of the pictures the last model
got wrong is written to ``MNISTLAB_BENCH_OUT`` (default: a temporary folder, printed).

    python -m benchmarks predict
"""

from __future__ import annotations

import importlib.util
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

SEEDS = (7, 8, 9)
BASELINE = "9e1480c"  # the last commit with the NumPy photo pipeline (issue 19 replaced it)
ROOT = Path(__file__).resolve().parents[1]


def baseline_tree(dest: Path) -> Path | None:
    """``mnistlab/`` as of ``BASELINE``, unpacked under ``dest`` (from this checkout's git); None without git."""
    try:
        data = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "mnistlab"], capture_output=True,
                              check=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def baseline_preprocess(tree: Path | None) -> ModuleType | None:
    """The ``BASELINE`` photo pipeline as a module of its own (it imports today's errors and decoder helpers)."""
    if tree is None:
        return None
    spec = importlib.util.spec_from_file_location("baseline_preprocess", tree / "mnistlab" / "preprocess.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["baseline_preprocess"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _train(tmp: Path) -> dict[str, Path]:
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    runs = {}
    t = time.perf_counter()
    runs["mlp (fast preset)"] = tmp / "mlp"
    train_run(from_preset("fast"), runs["mlp (fast preset)"], verbose=0)
    print(f"trained the fast MLP in {time.perf_counter() - t:.0f}s", flush=True)
    given = os.environ.get("MNISTLAB_BENCH_CNN_RUN")
    if given and given.lower() != "none":
        runs["cnn (given run)"] = Path(given)
    elif not given:
        t = time.perf_counter()
        runs["cnn (best, 1 epoch)"] = tmp / "cnn"
        train_run(from_preset("best", epochs=1, augment=""), runs["cnn (best, 1 epoch)"], verbose=0)
        print(f"trained the CNN in {time.perf_counter() - t:.0f}s", flush=True)
    return runs


def _cpu_ms(fn: Callable[[object], object], items: list, repeats: int = 3) -> float:
    """CPU milliseconds per item of ``fn`` over ``items``, the best of ``repeats`` passes."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - t) / len(items))
    return best * 1e3


def _split_ms(decode: Callable[[object], object], prepare: Callable[[object], object], items: list,
              repeats: int = 3) -> tuple[float, float, float]:  # fmt: skip
    """CPU milliseconds per item of ``decode`` and of ``prepare`` on what it decoded, each timed where it runs
    in the pipeline (picture after picture, decode then prepare: each finds the caches as the other left
    them), from the pass with the best total; and of ``decode`` alone in a loop of its own (warm caches)."""
    best = (float("inf"), float("inf"))
    clock = time.process_time
    for _ in range(repeats):
        d = p = 0.0
        for item in items:
            t0 = clock()
            im = decode(item)
            t1 = clock()
            prepare(im)
            p += clock() - t1
            d += t1 - t0
        if d + p < sum(best):
            best = (d / len(items), p / len(items))
    return best[0] * 1e3, best[1] * 1e3, _cpu_ms(decode, items, repeats)


def _pictures(n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` photo-like JPEGs of 500-800 px a side and ``n`` canvas drawings (RGBA PNG, 280×280, pen 18 px)."""
    from mnistlab.datasets import mnist
    from mnistlab.photolike import draw_digit, photo_set

    (_, _), (x, y) = mnist.load_data()
    photos, _ = photo_set(x[3000:], y[3000:], n, seed=19, sides=(500, 800))
    rng = np.random.default_rng(19)
    canvas = []
    for i in range(n):
        buf = io.BytesIO()
        draw_digit(i % 10, size=280, width=18, rng=rng).convert("RGBA").save(buf, format="PNG")
        canvas.append(buf.getvalue())
    return photos, canvas


def speed(predictor, before: ModuleType | None, n: int) -> None:
    """The per-picture split and the folder throughput, today's code against ``before``."""
    import cv2
    import torch

    from mnistlab import preprocess
    from mnistlab.predict import predict_images

    cv2.setNumThreads(1)  # one picture at a time on one core, as each server thread and worker does
    torch.set_num_threads(1)  # as `mnistlab serve` does; `python -m benchmarks` restores it afterwards
    photos, canvas = _pictures(n)
    model = predictor.loaded
    one = [np.zeros((28, 28), np.uint8)] * 20
    model_ms = _cpu_ms(lambda a: model.predict(a[None]), one)
    prepared = [predictor.prepare(p) for p in photos[:n]]
    batch_ms = _cpu_ms(lambda _: predictor.predict_prepared(prepared), [0]) / len(prepared)
    print(f"\nper picture, CPU ms of one process (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("(decode: as the pipeline decodes, a colour JPEG straight to gray, into memory the thread reuses; prepare:")
    print(" the recipe on the decoded picture; each timed in place, picture after picture; 'before': the code before")
    print(" issue 19; total: both)")
    header = (f"{'pictures':<28} {'decode':>7} {'prepare':>8} {'prep/dec':>8} {'total':>6} │ {'decode':>7} {'prepare':>8}"
              f" {'total':>6} │ {'total now/before':>16} {'model':>6}")  # fmt: skip
    print(f"{'':<28} {'now':-^32} │ {'before':-^24} │")
    print(header)
    print("-" * len(header))
    alone = []
    for name, items in ((f"{n} photos, 500-800 px JPEG", photos), (f"{n} canvas PNGs, 280×280", canvas)):
        decode, prepare, decode_alone = _split_ms(
            lambda p: preprocess.read_image(p, gray=True, into=preprocess._decode_target),
            predictor.prepare,
            items,
            repeats=5,
        )
        old_decode, old, _ = (
            _split_ms(before.read_image, before.prepare_image, items) if before else (float("nan"),) * 3
        )
        print(f"{name:<28} {decode:7.2f} {prepare:8.2f} {prepare / decode:7.2f}x {decode + prepare:6.2f} │ "
              f"{old_decode:7.2f} {old:8.2f} {old_decode + old:6.2f} │ "
              f"{(old_decode + old) / (decode + prepare):15.1f}x {model_ms:6.2f}")  # fmt: skip
        alone.append(f"{name.split(',')[0].split(' ', 1)[1]} {decode_alone:.2f} ms (prepare = total - that: "
                     f"{decode + prepare - decode_alone:.2f}, {(decode + prepare) / decode_alone - 1:.2f}x)")  # fmt: skip
    print(f"  (decode alone, in a loop of its own with warm caches: {'; '.join(alone)})")
    print(f"  (model: one picture per call; in batches of {len(prepared)} it is {batch_ms:.3f} ms a picture)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, p in enumerate(photos):
            (folder / f"photo_{i:04d}.jpg").write_bytes(p)
        cv2.setNumThreads(cv2.getNumberOfCPUs())
        t = time.perf_counter()
        got = predict_images(predictor.loaded.path, [folder], errors="keep")
        new_rate = len(got) / (time.perf_counter() - t)
        print(f"\npredict on a folder of {n} photos (wall-clock, load average {os.getloadavg()[0]:.1f}):")
        print(f"  now     {new_rate:7.1f} photos/s  (prepared in threads, batches of the model)")
        if before is not None:
            files = sorted(folder.iterdir())
            t = time.perf_counter()
            old_inputs = []
            for f in files:  # what Predictor.predict did before: one picture after another, one batch
                try:
                    old_inputs.append(before.prepare_image(f).image)
                except Exception:
                    pass
            model.predict(np.stack(old_inputs))
            old_rate = len(files) / (time.perf_counter() - t)
            print(f"  before  {old_rate:7.1f} photos/s  →  {new_rate / old_rate:.1f}x")


def accuracy(predictors: dict, before: ModuleType | None, n: int, out_dir: Path) -> None:
    from mnistlab.datasets import mnist
    from mnistlab.errors import ImageError
    from mnistlab.photolike import draw_digit, photo_set
    from mnistlab.plots import image_grid
    from mnistlab.preprocess import lesson_image

    (_, _), (x_test, y_test) = mnist.load_data()
    first = next(iter(predictors.values()))
    ways = (
        ["now", "before", "lesson (threshold 200)", "lesson (inverted)"]
        if before
        else ["now", "lesson (threshold 200)"]
    )
    acc: dict[tuple[str, str], list[float]] = {}
    wrong: list[tuple[np.ndarray, str]] = []
    for k, seed in enumerate(SEEDS):
        photos, labels = photo_set(x_test[k * n :], y_test[k * n :], n, seed=seed)
        inputs: dict[str, list[np.ndarray | None]] = {"now": [], "before": []}
        for p in photos:
            for way, prep in (("now", first.prepare), ("before", before.prepare_image if before else None)):
                if prep is None:
                    continue
                try:
                    inputs[way].append(prep(p).image)
                except ImageError:  # "no digit found": counts as wrong below
                    inputs[way].append(None)
        lesson = {"lesson (threshold 200)": np.stack([lesson_image(p) for p in photos]),
                  "lesson (inverted)": np.stack([lesson_image(p, threshold=None) for p in photos])}  # fmt: skip
        for name, pred in predictors.items():
            for way in ways:
                if way.startswith("lesson"):
                    guess = pred.loaded.predict(lesson[way]).argmax(1)
                else:
                    ok = [i for i, a in enumerate(inputs[way]) if a is not None]
                    guess = np.full(n, -1)
                    guess[ok] = pred.loaded.predict(np.stack([inputs[way][i] for i in ok])).argmax(1)
                    if way == "now" and name == list(predictors)[-1] and k == 0:
                        wrong = [(inputs[way][i], f"{labels[i]}→{guess[i]}") for i in ok if guess[i] != labels[i]]
                acc.setdefault((name, way), []).append(float(np.mean(guess == labels)))
        print(f"seed {seed}: {n} photos, {sum(a is None for a in inputs['now'])} with no digit found", flush=True)

    print(f"\nphoto-like digits: {len(SEEDS)} sets × {n}; accuracy median [min, max] over the sets")
    header = f"{'model':<22}" + "".join(f" {w:>24}" for w in ways)
    print(header)
    print("-" * len(header))
    for name in predictors:
        cells = [acc[(name, w)] for w in ways]
        print(f"{name:<22}" + "".join(f" {statistics.median(v):>8.4f} [{min(v):.3f}, {max(v):.3f}]" for v in cells))

    # Digits drawn like a person: thin to bold strokes, centred or small in a corner, a little wobble.
    rng = np.random.default_rng(0)
    cases = [(d, w, b) for d in range(10) for w in (3, 8, 18, 30)
             for b in ((0.2, 0.12, 0.8, 0.88), (0.05, 0.05, 0.4, 0.45), (0.55, 0.45, 0.95, 0.95))]  # fmt: skip
    drawings = [draw_digit(d, size=400, width=w, box=b, rng=rng) for d, w, b in cases]
    truth = np.array([d for d, _, _ in cases])
    for name, pred in predictors.items():
        got = np.array([p.index for p in pred.predict(drawings, errors="keep")])
        line = f"drawn digits, {name}: now {np.mean(got == truth):.4f}"
        if before:
            old = np.stack([before.prepare_image(d).image for d in drawings])
            line += f", before {np.mean(pred.loaded.predict(old).argmax(1) == truth):.4f}"
        print(f"{line} of {len(cases)} (thin to bold strokes, 3 places)")

    if wrong:
        path = out_dir / "predict_mistakes.png"
        images, titles = zip(*wrong[:60], strict=True)
        image_grid(np.stack(images), titles, path, cols=12, title=f"photo-like digits {list(predictors)[-1]} got wrong")
        print(f"\nthe inputs it got wrong (true→predicted): {path}")


def main() -> None:
    from mnistlab.predict import Predictor

    n = int(os.environ.get("MNISTLAB_BENCH_PHOTOS", "600"))
    n_speed = int(os.environ.get("MNISTLAB_BENCH_SPEED", "200"))
    out_dir = Path(os.environ.get("MNISTLAB_BENCH_OUT") or tempfile.mkdtemp(prefix="bench-predict-"))
    with tempfile.TemporaryDirectory() as tmp:
        before = baseline_preprocess(baseline_tree(Path(tmp) / "baseline"))
        if before is None:
            print(f"(no git checkout: the code before issue 19, commit {BASELINE}, is not measured)")
        predictors = {name: Predictor(run) for name, run in _train(Path(tmp)).items()}
        speed(next(iter(predictors.values())), before, n_speed)
        accuracy(predictors, before, n, out_dir)


if __name__ == "__main__":
    main()
