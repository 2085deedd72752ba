"""Pictures: the one place that draws image grids and figures.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by Agg, never made through pyplot, so
nothing here needs a display, switches a notebook's backend, or shares pyplot's global state between
threads (the web app draws too). Only ``show_figures`` touches pyplot, to open windows on request.
Each ``plot_*`` function returns the figure, or saves it when given a path (and returns the path).

>>> plot_history("runs/main", "curves.png")                # doctest: +SKIP
PosixPath('curves.png')
>>> fig = plot_confusion("runs/main")                      # in a notebook, the figure shows itself  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistlab import fileio
from mnistlab.analysis import HistoryLike, Predictions, load_history, predict_run
from mnistlab.augment import Augment, preview_images
from mnistlab.datasets import load
from mnistlab.errors import ConfigError, MnistlabError
from mnistlab.metrics import ACC

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")
TRAIN_COLOR, VAL_COLOR, BEST_COLOR, MISTAKE_COLOR = "tab:blue", "tab:orange", "tab:green", "firebrick"
# Accuracy keys, ours first: Keras users may pass a history compiled with metrics=["accuracy"].
ACC_KEYS = (ACC, "accuracy", "acc")

PredictionsLike = Predictions | str | os.PathLike


def new_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A figure drawn by Agg, with no pyplot involved."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout=layout)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100, force: bool = False) -> Path:
    """Save a figure atomically; the format follows the suffix (PNG when there is none).

    >>> save_figure(new_figure((2, 2)), "/tmp/empty.png")
    PosixPath('/tmp/empty.png')
    """
    path = Path(path)
    fmt = check_output(path, force=force)
    try:
        with fileio.atomic_open(path, "wb") as f:
            # Matplotlib signs PNG, SVG and PDF; a JPEG gets our name as a comment (what check_output looks for).
            extra = {"pil_kwargs": {"comment": b"mnistlab"}} if fmt in ("jpg", "jpeg") else {}
            fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight", **extra)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None
    _release(fig)
    return path


def check_output(path: Path, force: bool = False) -> str:
    """The picture format a file name asks for; a clear error for a folder or an unknown suffix, and
    for a file mnistlab did not write (unless ``force``), as ``fileio.check_new_output`` rules."""
    fmt = path.suffix[1:].lower() or "png"
    if fmt not in FORMATS:
        raise ConfigError(f"{path}: cannot write a .{fmt} picture (use .png, .svg, .pdf or .jpg)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name such as {path / 'plot.png'}")
    fileio.check_new_output(path, (path.suffix.lower(),), force=force)
    return fmt


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for embedding in a page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _release(fig)
    return buf.getvalue()


def _release(fig: Figure) -> None:
    # A figure someone made with pyplot stays in pyplot's registry (and memory) until closed.
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


def _finish(fig: Figure, path: str | os.PathLike[str] | None, dpi: int = 100, force: bool = False) -> Figure | Path:
    return fig if path is None else save_figure(fig, path, dpi, force)


def show_figures(figs: Sequence[Figure]) -> bool:
    """Open the figures in windows and wait until they are closed; False where no window can open."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import matplotlib.pyplot as plt  # picks a GUI backend, or falls back to Agg when none works

    if plt.get_backend().lower() in ("agg", "pdf", "ps", "svg", "pgf", "cairo", "template"):
        return False
    try:
        for fig in figs:
            plt.figure(fig)  # adopts a pyplot-free figure into a window; older matplotlib refuses (ValueError)
    except ValueError:
        return False
    plt.show()
    return True


# -- image grids ----------------------------------------------------------------------------------


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    cols: int = 10,
    cell: float = 1.1,
    title: str | None = None,
    title_colors: Sequence[str] | None = None,
    force: bool = False,
) -> Figure | Path:
    """A grid of images (uint8 or 0..1 floats, gray ``(N, H, W)`` or RGB ``(N, H, W, 3)``) with titles.

    Returns the figure, or saves it when ``path`` is given (and returns the path).

    >>> image_grid(np.zeros((4, 28, 28), np.uint8), ["a", "b", "c", "d"], cols=2).axes[0].get_title()
    'a'
    """
    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    # Fixed spacing rather than a layout engine: a grid of many cells would spend seconds on layout.
    title_h, head = 0.16 * lines + 0.05, (0.45 if title else 0.05)
    height = rows * (cell + title_h) + head
    fig = new_figure((cols * cell, height), layout=None)
    top = 1 - (head + title_h) / height  # the first row's titles sit above it, under the suptitle
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.06, hspace=title_h / cell)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(str(titles[i]), fontsize=8, color=color)
    if title:
        fig.suptitle(title, y=1 - 0.06 / height, va="top")
    return _finish(fig, path, force=force)


# -- training curves ------------------------------------------------------------------------------


def plot_history(source: HistoryLike, path: str | os.PathLike[str] | None = None, *, dpi: int = 100) -> Figure | Path:
    """The lesson's two panels, accuracy and loss, training vs validation per epoch (1-based).

    ``source`` is a ``History``, a dict (``History.to_dict()`` or Keras's ``history.history``) or a run
    folder. A dashed line marks each resume; a dotted line and a star mark the best epoch.

    >>> plot_history({"loss": [0.5, 0.3], "val_loss": [0.4, 0.35]}).axes[1].get_title()
    'Training and Validation Loss'
    """
    h = load_history(source)
    fig = new_figure((11, 4.2))
    axes = fig.subplots(1, 2)
    if not h.epoch:  # a run made by import-keras: a model, but no epochs trained here
        for ax, what in zip(axes, ("Accuracy", "Loss"), strict=True):
            ax.set_title(f"Training and Validation {what}")
            ax.text(0.5, 0.5, "no training history\n(the model was imported, not trained here)",
                    ha="center", va="center", transform=ax.transAxes, color="gray")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
        return _finish(fig, path, dpi)
    smoothing = _label_smoothing(source)
    x_train = [e + 1 for e in h.epoch]
    x_val = [e + 1 for e in h.val_epoch]
    acc_key = next((k for k in ACC_KEYS if k in h.history or f"val_{k}" in h.history), ACC)
    best = h.best if h.best.get("epoch") else {}
    best_base = str(best.get("monitor", "")).removeprefix("val_")
    for ax, key, what, legend_at in (
        (axes[0], acc_key, "Accuracy", "lower right"),
        (axes[1], "loss", "Loss", "upper right"),
    ):
        series = ((key, x_train, "Training", TRAIN_COLOR), (f"val_{key}", x_val, "Validation", VAL_COLOR))
        for k, xs, label, color in series:
            if h.history.get(k):
                ax.plot(xs, h.history[k], "o-", color=color, ms=4, label=f"{label} {what}")
        for r in h.resumed_at:
            ax.axvline(r, color="gray", ls="--", lw=1, label=f"resumed at {r:g}")
        if best:
            ax.axvline(best["epoch"], color=BEST_COLOR, ls=":", lw=1.5, label=f"best: epoch {best['epoch']}")
            if best_base == key and "value" in best:
                ax.plot([best["epoch"]], [best["value"]], "*", ms=15, color="gold", mec="black", zorder=5)
        ax.set_title(f"Training and Validation {what}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what.lower())
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(min([1.0, *h.resumed_at]) - 0.5, max(x_train + x_val) + 0.5)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc=legend_at, fontsize=8)
    if smoothing and h.history.get("loss"):
        # The training loss is the smoothed loss that was minimised; the validation loss is plain cross-entropy.
        axes[1].text(0.5, -0.2, f"training loss includes label smoothing {smoothing:g}; validation loss does not",
                     ha="center", va="top", transform=axes[1].transAxes, fontsize=8, color="dimgray")  # fmt: skip
    return _finish(fig, path, dpi)


def _label_smoothing(source: HistoryLike) -> float:
    """The run's label smoothing, when ``source`` is a run folder or checkpoint (0 when unknown)."""
    if not isinstance(source, str | os.PathLike):
        return 0.0
    p = Path(source)
    try:
        if p.is_dir():
            import json

            config = json.loads((p / "config.json").read_text()) if (p / "config.json").is_file() else {}
        else:
            from mnistlab.checkpoint import read_meta

            config = read_meta(p).get("config", {})
        return float(config.get("label_smoothing") or 0.0)
    except (ValueError, OSError, TypeError, AttributeError, MnistlabError):
        return 0.0


def plot_compare(
    sources: Sequence[HistoryLike],
    path: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """Several runs' curves on the lesson's two panels: validation solid, training dashed, one colour a run.

    ``sources`` are run folders (labelled by folder name) or anything :func:`plot_history` takes.

    >>> fig = plot_compare([{"loss": [0.5, 0.3]}, {"loss": [0.6, 0.2]}], labels=["a", "b"])
    >>> [line.get_label() for line in fig.axes[1].get_lines()]
    ['a training', 'b training']
    """
    if not sources:
        raise ConfigError("compare needs at least one run")
    if labels is not None and len(labels) != len(sources):
        raise ConfigError(f"{len(labels)} labels for {len(sources)} runs")
    histories = [load_history(s) for s in sources]
    if labels is None:
        names = [Path(s).name if isinstance(s, str | os.PathLike) else f"run {i + 1}" for i, s in enumerate(sources)]
        full = [str(s) if isinstance(s, str | os.PathLike) else n for s, n in zip(sources, names, strict=True)]
        labels = names if len(set(names)) == len(names) else full
    fig = new_figure((11, 4.2))
    axes = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(histories))]
    for ax, what in ((axes[0], "Accuracy"), (axes[1], "Loss")):
        for h, label, color in zip(histories, labels, colors, strict=True):
            key = "loss" if what == "Loss" else next((k for k in ACC_KEYS if k in h.history), ACC)
            for k, xs, kind, style in (
                (f"val_{key}", h.val_epoch, "validation", "o-"),
                (key, h.epoch, "training", "o--"),
            ):
                if h.history.get(k):
                    ax.plot([e + 1 for e in xs], h.history[k], style, color=color, ms=3, label=f"{label} {kind}")
        ax.set_title(f"Training and Validation {what}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what.lower())
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _finish(fig, path, dpi)


# -- what the model gets wrong --------------------------------------------------------------------


def _predictions(source: PredictionsLike, which: str) -> Predictions:
    return source if isinstance(source, Predictions) else predict_run(source, which)


def plot_confusion(
    source: PredictionsLike, path: str | os.PathLike[str] | None = None, *, which: str = "best", dpi: int = 100
) -> Figure | Path:
    """Confusion matrix on the test split: counts, and normalised per true class (each row sums to 1).

    ``source`` is a run folder, a checkpoint file, or ``Predictions``.
    """
    p = _predictions(source, which)
    cm = p.confusion()
    k = len(p.class_names)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    side = max(4.5, 0.45 * k + 1.8)
    fig = new_figure((2 * side + 0.6, side))
    axes = fig.subplots(1, 2)
    rotate = 45 if max(len(n) for n in p.class_names) > 3 else 0
    for ax, data, what in ((axes[0], cm, "counts"), (axes[1], norm, "row-normalised (recall)")):
        top = float(data.max()) or 1.0
        ax.imshow(data, cmap="Blues", vmin=0, vmax=top)
        ax.set_title(what)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 30:
            ax.set_xticks(range(k), p.class_names, rotation=rotate, ha="right" if rotate else "center", fontsize=8)
            ax.set_yticks(range(k), p.class_names, fontsize=8)
        if k <= 20:  # numbers in the cells stay legible up to about 20 classes
            for i, j in zip(*np.nonzero(data), strict=True):
                v = data[i, j]
                text = f"{v:d}" if data is cm else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    fig.suptitle(f"Confusion matrix on the test split: {len(p.y):,} images, accuracy {p.accuracy:.2%}")
    return _finish(fig, path, dpi)


def plot_mistakes(
    source: PredictionsLike,
    path: str | os.PathLike[str] | None = None,
    n: int = 24,
    *,
    which: str = "best",
    cols: int = 8,
) -> Figure | Path:
    """The ``n`` most confident wrong predictions: image, test index, true class, predicted class and its probability."""
    if n < 1:
        raise ConfigError(f"number of mistakes to show must be ≥ 1, got {n}")
    p = _predictions(source, which)
    idx = p.mistakes(n)
    wrong = int((p.pred != p.y).sum())
    if len(idx) == 0:
        fig = new_figure((6, 1.2))
        fig.text(0.5, 0.5, f"No mistakes on the {len(p.y):,} test images.", ha="center", va="center", fontsize=14)
        return _finish(fig, path)
    names, pred = p.class_names, p.pred
    # Round the probability down: a 99.96% guess shown as "100%" would claim a certainty the model lacks.
    titles = [
        f"#{i} true: {names[p.y[i]]}\npred: {names[pred[i]]} {math.floor(p.probs[i, pred[i]] * 1000) / 10:.1f}%"
        for i in idx
    ]
    return image_grid(
        p.x[idx], titles, path, cols=cols, cell=1.45, title_colors=[MISTAKE_COLOR] * len(idx),
        title=f"The {f'{len(idx)} ' if len(idx) > 1 else ''}most confident of {wrong:,} mistakes on {len(p.y):,} test images",
    )  # fmt: skip


def plot_per_class(
    source: PredictionsLike, path: str | os.PathLike[str] | None = None, *, which: str = "best", dpi: int = 100
) -> Figure | Path:
    """Accuracy of each class on the test split as bars, the weakest in red, the overall accuracy as a line."""
    p = _predictions(source, which)
    acc = p.per_class_accuracy()
    k = len(acc)
    fig = new_figure((max(6.0, 0.55 * k + 1.5), 4))
    ax = fig.subplots()
    finite = acc[np.isfinite(acc)]
    worst = int(np.nanargmin(acc)) if len(finite) else -1
    colors = [MISTAKE_COLOR if c == worst else TRAIN_COLOR for c in range(k)]
    bars = ax.bar(range(k), np.nan_to_num(acc), color=colors)
    ax.bar_label(bars, ["n/a" if math.isnan(a) else f"{a:.1%}" for a in acc], fontsize=7, padding=2)
    ax.axhline(p.accuracy, color="gray", ls="--", lw=1)
    # Accuracies crowd near 1: start the axis just below the weakest class so differences show.
    low = max(0.0, math.floor((float(finite.min()) - 0.03) * 20) / 20) if len(finite) else 0.0
    ax.set_ylim(low, 1.0 + (1.0 - low) * 0.08)
    ax.set_xticks(range(k), p.class_names, rotation=45 if max(map(len, p.class_names)) > 3 else 0, fontsize=8)
    ax.set_ylabel("accuracy (recall)" + (f", axis from {low:.0%}" if low > 0 else ""))
    ax.set_title(f"Per-class accuracy on the test split ({len(p.y):,} images; dashed: overall {p.accuracy:.2%})")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path, dpi)


# -- the `mnistlab plot` command as one call ------------------------------------------------------

DEFAULT_NAMES = {
    "curves": "curves.png",
    "confusion": "confusion.png",
    "mistakes": "mistakes.png",
    "per_class": "per_class.png",
}


def plot_run(
    run: str | os.PathLike[str],
    *,
    curves: bool = True,
    confusion: bool = False,
    mistakes: int = 0,
    per_class: bool = False,
    output: str | os.PathLike[str] | None = None,
    which: str = "best",
    show: bool = False,
    dpi: int = 100,
    force: bool = False,
) -> tuple[list[Path], bool]:
    """Draw the asked figures of a run and save each; return the paths and whether windows were shown.

    ``output`` names the file when one figure is asked; otherwise each goes to its default name
    (``curves.png``, ``confusion.png``, ``mistakes.png``, ``per_class.png``).
    """
    kinds = [
        k
        for k, on in (("curves", curves), ("confusion", confusion), ("mistakes", mistakes), ("per_class", per_class))
        if on
    ]
    if not kinds:
        raise ConfigError("nothing to plot: ask for curves, confusion, mistakes or per-class")
    if output is not None and len(kinds) > 1:
        names = ", ".join(DEFAULT_NAMES[k] for k in kinds)
        raise ConfigError(f"-o names one file but {len(kinds)} figures were asked; leave -o out to write {names}")
    if mistakes < 0:
        raise ConfigError(f"number of mistakes to show must be ≥ 1, got {mistakes}")
    if not 10 <= dpi <= 1000:
        raise ConfigError(f"dpi must lie in 10..1000, got {dpi}")
    # Check everything before writing anything, so bad input leaves no half set of files.
    outputs = [Path(output if output is not None else DEFAULT_NAMES[kind]) for kind in kinds]
    for path in outputs:
        check_output(path, force=force)
    load_history(run)  # a folder that is not a run, or has no finished epoch, fails before any plotting
    preds = predict_run(run, which) if kinds != ["curves"] else None
    figs = []
    for kind in kinds:
        if kind == "curves":
            figs.append(plot_history(run))  # the run, not its history: the plot notes label smoothing
        elif kind == "confusion":
            figs.append(plot_confusion(preds))
        elif kind == "mistakes":
            figs.append(plot_mistakes(preds, n=mistakes))
        else:
            figs.append(plot_per_class(preds))
    paths = [save_figure(fig, path, dpi, force) for fig, path in zip(figs, outputs, strict=True)]
    return paths, (show_figures(figs) if show else False)


def preview_augment(
    augment: Augment | str,
    path: str | os.PathLike[str] = "preview.png",
    *,
    dataset: str = "mnist",
    count: int = 8,
    versions: int = 5,
    seed: int = 0,
    split: str = "train",
    force: bool = False,
) -> Path:
    """Save a PNG grid: one row per image, the original then ``versions`` augmented copies.

    >>> preview_augment("rotation=45,shift=0.15,zoom=0.5", "preview.png")  # doctest: +SKIP
    PosixPath('preview.png')
    """
    aug = Augment.parse(augment) if isinstance(augment, str) else augment
    if count < 1:
        raise ConfigError(f"count must be ≥ 1, got {count}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    check_output(Path(path), force=force)
    ds = load(dataset)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    idx = np.sort(np.random.default_rng(seed).choice(len(x), min(count, len(x)), replace=False))
    grid = preview_images(np.asarray(x[idx]), aug, versions, seed)
    titles = []
    for i in idx:
        titles += [f"{ds.class_names[int(y[i])]}"] + [""] * versions
    return image_grid(
        grid,
        titles,
        path,
        cols=versions + 1,
        title=f"{ds.name}: original, then {versions} augmented ({aug})",
        force=force,
    )
