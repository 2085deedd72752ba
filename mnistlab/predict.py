"""Recognise real pictures with a trained run: the library behind ``mnistlab predict`` and the web page.

Every picture goes through :func:`mnistlab.preprocess.prepare_image`, chosen for the run's data set
(digits for MNIST, clothes for Fashion-MNIST), so the model sees what it was trained on; each
:class:`Prediction` keeps that 28×28 input so a user can check it.

>>> predictions = predict_images("runs/main", ["photo_of_a_7.jpg"])    # doctest: +SKIP
>>> predictions[0].name, round(predictions[0].probability, 3)          # doctest: +SKIP
('7', 0.998)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnistlab import fileio
from mnistlab.errors import ConfigError, ImageError, MnistlabError
from mnistlab.preprocess import KINDS, ImageSource, Prepared, kind_for, prepare_files, prepare_image
from mnistlab.runfolder import RunFolder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# From this many picture files on, they are prepared in parallel (threads; processes for very many: see
# mnistlab.preprocess.PROCESSES_FROM).
PARALLEL_FROM = 16
BATCH = 512  # pictures the model sees at once


@dataclass
class Prediction:
    """The answer for one picture: the class, its probability, all probabilities, and the input seen.

    ``error`` is set (and the rest empty) when the picture could not be used.
    """

    source: str
    class_names: tuple[str, ...] = ()
    probabilities: list[float] = field(default_factory=list)
    prepared: Prepared | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def index(self) -> int | None:
        return int(np.argmax(self.probabilities)) if self.probabilities else None

    @property
    def name(self) -> str | None:
        return self.class_names[self.index] if self.index is not None else None

    @property
    def probability(self) -> float:
        return float(max(self.probabilities)) if self.probabilities else 0.0

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely classes as ``(name, probability)``, most likely first."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]

    def to_dict(self, with_input: bool = False) -> dict:
        """JSON-ready: ``source``, ``class``, ``index``, ``probability``, ``top`` (3), ``probabilities``
        (by class name), and with ``with_input`` the 28×28 input as nested lists of 0..255."""
        if not self.ok:
            return {"source": self.source, "error": self.error}
        d = {
            "source": self.source,
            "class": self.name,
            "index": self.index,
            "probability": self.probability,
            "top": [{"class": n, "probability": p} for n, p in self.top(3)],
            "probabilities": dict(zip(self.class_names, map(float, self.probabilities), strict=True)),
        }
        if self.prepared is not None:
            d["thickened"] = self.prepared.thickened
            if with_input:
                d["input"] = self.prepared.image.tolist()
        return d

    def line(self) -> str:
        """One line for people: ``photo.jpg: 7 (99.1%)  top 3: 7 99.1%, 1 0.5%, 9 0.2%``."""
        if not self.ok:
            return f"{printable(self.source)}: error: {printable(self.error)}"
        top = ", ".join(f"{n} {p:.1%}" for n, p in self.top(3))
        return f"{printable(self.source)}: {self.name} ({self.probability:.1%})  top 3: {top}"


class Predictor:
    """A run's model, loaded once, with the preprocessing its data set needs.

    >>> predictor = Predictor("runs/main")                         # doctest: +SKIP
    >>> predictor.predict_one("digit.png").name                    # doctest: +SKIP
    '3'
    """

    def __init__(
        self,
        run: str | os.PathLike[str],
        which: str = "best",
        kind: str | None = None,
        thicken: bool | None = None,
        device: str = "cpu",
    ) -> None:
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.run = RunFolder(run)
        self.which = which
        self.loaded = self.run.load(which, device)
        self.class_names = self.loaded.class_names
        dataset = self.loaded.meta.get("dataset") or self.loaded.config.get("dataset")
        self.kind = kind or kind_for(dataset, self.class_names)
        self.thicken = thicken
        self.in_shape = self.loaded.in_shape

    def prepare(self, src: ImageSource, name: str | None = None) -> Prepared:
        """The model's input for one picture (raises ``ImageError`` for unreadable or empty pictures)."""
        return prepare_image(src, name=name, **self._options())

    def _options(self) -> dict:
        c, h, w = self.in_shape
        return {"kind": self.kind, "size": (h, w), "channels": c, "thicken": self.thicken}

    def predict_prepared(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Probabilities ``(N, classes)`` for inputs made by :meth:`prepare`, in one batch."""
        c = self.in_shape[0]
        x = np.stack([p.image for p in prepared])
        if c == 3 and x.ndim == 3:  # a gray picture for a colour model
            x = np.repeat(x[..., None], 3, axis=-1)
        return self.loaded.predict(x)

    def predict(
        self,
        sources: Iterable[ImageSource],
        names: Sequence[str] | None = None,
        errors: str = "raise",
        workers: int | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per picture. ``errors="keep"`` records a bad picture's error in its
        Prediction and goes on; ``"raise"`` (the default) raises the first ``ImageError``.

        Many picture files (:data:`PARALLEL_FROM` or more) are prepared by ``workers`` threads or, for
        very many, processes (default: one per core; threads only in a plain script: see
        :func:`_spawn_is_safe`), and the model sees them in batches of :data:`BATCH`.
        """
        if errors not in ("raise", "keep"):
            raise ConfigError(f"errors must be 'raise' or 'keep', got {errors!r}")
        sources = list(sources)
        names = list(names) if names is not None else [_describe(s, i) for i, s in enumerate(sources)]
        out = [Prediction(name, self.class_names) for name in names]
        pending: list[tuple[int, Prepared]] = []
        for i, result in enumerate(self._prepare_all(sources, names, workers)):
            if isinstance(result, ImageError):
                if errors == "raise":
                    raise result
                out[i].error = _without_prefix(str(result), names[i])
                continue
            pending.append((i, result))
            if len(pending) == BATCH:
                self._fill(out, pending)
                pending = []
        self._fill(out, pending)
        return out

    def _fill(self, out: list[Prediction], batch: list[tuple[int, Prepared]]) -> None:
        if not batch:
            return
        probs = self.predict_prepared([p for _, p in batch])
        for (i, prepared), row in zip(batch, probs, strict=True):
            out[i].probabilities = [float(v) for v in row]
            out[i].prepared = prepared

    def _prepare_all(
        self, sources: list[ImageSource], names: list[str], workers: int | None
    ) -> Iterator[Prepared | ImageError]:
        """Each picture's model input, or the ``ImageError`` that refused it, in order."""
        options = self._options()
        processes = workers is not None or _spawn_is_safe()
        workers = workers if workers is not None else _cores()
        files = all(isinstance(s, str | os.PathLike) for s in sources)
        if workers > 1 and files and len(sources) >= PARALLEL_FROM:
            paths = [os.fspath(s) for s in sources]
            yield from prepare_files(paths, names, options, workers, processes=processes)  # type: ignore[arg-type]
            return
        for src, name in zip(sources, names, strict=True):
            try:
                yield self.prepare(src, name)
            except ImageError as e:
                yield e

    def predict_one(self, src: ImageSource, name: str | None = None) -> Prediction:
        """The prediction for one picture; raises ``ImageError`` when it cannot be used."""
        return self.predict([src], [name or _describe(src, 0)])[0]

    def info(self) -> dict:
        """What the web page shows about the model: architecture, classes, test accuracy, preprocessing."""
        spec = self.loaded.spec
        n_params = sum(p.numel() for p in self.loaded.model.parameters())
        return {
            "architecture": spec.get("name"),
            "spec": spec,
            "parameters": int(n_params),
            "classes": list(self.class_names),
            "dataset": (self.loaded.meta.get("dataset") or {}).get("name") or self.loaded.config.get("dataset"),
            "test_accuracy": self.run.test_accuracy(self.which),
            "kind": self.kind,
            "input_shape": list(self.in_shape),
            "checkpoint": str(self.loaded.path),
        }


def _spawn_is_safe() -> bool:
    """Whether worker processes may start on their own: a new process imports the main module again,
    which reruns a plain ``python script.py`` without an ``if __name__ == "__main__":`` guard. The CLI
    and other ``python -m`` programs, ``python -c``, notebooks and the REPL are safe; a script gets
    workers when it asks for them (``workers=N``), as Python's multiprocessing documents."""
    main = sys.modules.get("__main__")
    return getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _describe(src: ImageSource, i: int) -> str:
    return str(src) if isinstance(src, str | os.PathLike) else f"image {i + 1}"


def _without_prefix(message: str, name: str) -> str:
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Paths as given, with each folder replaced by the pictures directly inside it (sorted by name).

    Raises ``ImageError`` for a folder holding no pictures; missing files are left for the caller
    to report one by one.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{p}: no pictures in this folder ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(p)
    return out


def printable(text: object) -> str:
    """``text`` with control characters escaped, so a file name holding a newline stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def save_inputs(predictions: Sequence[Prediction], folder: str | os.PathLike[str]) -> list[Path]:
    """Write each prediction's 28×28 input as ``<folder>/<picture name>.png`` (atomically); names
    that repeat (same file name in two folders) get ``-2``, ``-3``…

    Refuses (``ImageError``, before writing anything) a folder holding the input pictures, and any
    file there that mnistlab did not write: a user's pictures are never overwritten.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ImageError(f"--save-input {folder}: exists and is not a folder")
    if folder.is_dir():
        here = folder.resolve()
        for pred in predictions:
            if pred.source and Path(pred.source).parent.resolve() == here and Path(pred.source).is_file():
                raise ImageError(
                    f"--save-input {folder}: holds the input pictures ({printable(Path(pred.source).name)}); "
                    "choose another folder"
                )
    targets = _input_names(predictions, folder)
    for path in targets.values():
        if path.exists() and not fileio.made_by_toolkit(path):
            raise ImageError(f"--save-input {folder}: {printable(path.name)} exists and was not written by mnistlab")
    written: list[Path] = []
    try:
        for i, path in targets.items():
            prepared = predictions[i].prepared
            assert prepared is not None
            fileio.write_bytes(path, fileio.mark_png(prepared.to_png()))
            written.append(path)
    except OSError as e:
        raise ImageError(f"--save-input {folder}: cannot write ({e.strerror or e})") from None
    return written


def _input_names(predictions: Sequence[Prediction], folder: Path) -> dict[int, Path]:
    """Where each prepared input goes: ``<folder>/<picture name>.png``, repeats numbered."""
    out: dict[int, Path] = {}
    used: set[str] = set()
    for i, pred in enumerate(predictions):
        if pred.prepared is None:
            continue
        stem = Path(pred.source).stem if pred.source else f"image-{i + 1}"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        out[i] = folder / f"{name}.png"
    return out


def predict_images(
    run: str | os.PathLike[str],
    inputs: Iterable[ImageSource],
    *,
    which: str = "best",
    kind: str | None = None,
    thicken: bool | None = None,
    save_input: str | os.PathLike[str] | None = None,
    errors: str = "raise",
) -> list[Prediction]:
    """Predict every picture in ``inputs`` (paths, folders of pictures, bytes, arrays, PIL images).

    ``save_input`` writes the 28×28 inputs the model saw as PNGs there; ``errors="keep"`` records
    bad pictures in their Prediction instead of raising.
    """
    predictor = Predictor(run, which=which, kind=kind, thicken=thicken)
    items = list(inputs)
    paths = [i for i in items if isinstance(i, str | os.PathLike)]
    if len(paths) == len(items):
        items = list(expand_inputs(paths))
    predictions = predictor.predict(items, errors=errors)
    if save_input is not None:
        save_inputs(predictions, save_input)
    return predictions


def interactive(
    predictor: Predictor,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    save_input: str | os.PathLike[str] | None = None,
) -> int:
    """The lesson's app as a loop: ask for a picture's path, say what it shows, ask again.

    An empty answer, ``q`` or end of input stops; a bad path or a picture that is not one is
    reported and the question asked again. Returns how many pictures were recognised.
    """
    done = 0
    while True:
        try:
            answer = ask("picture path (empty line or q to quit): ").strip()
        except EOFError:
            say("")
            return done
        if answer in ("", "q", "quit", "exit"):
            return done
        path = answer.strip("'\"")  # paths dragged into a terminal arrive quoted
        try:
            pred = predictor.predict_one(path, path)
        except MnistlabError as e:
            say(f"error: {e}")
            continue
        if save_input is not None:
            save_inputs([pred], save_input)
        say(pred.line())
        done += 1
