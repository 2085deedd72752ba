"""What defines a training run: one dataclass, saved in every checkpoint, plus the named presets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mnistlab.devices import DEVICE_CHOICES, PRECISIONS, valid_device_name
from mnistlab.errors import ConfigError
from mnistlab.metrics import KEYS as MONITORS  # what a checkpoint, early stopping or the plateau may watch

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "muon")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
# Pictures with more pixels are refused before decoding (a 100 KB PNG can claim 50,000 x 50,000 pixels):
# mnistlab.imaging's one limit, here so the CLI can show it without importing NumPy or Pillow.
MAX_PIXELS = 40_000_000
# How data build fits a picture into the data set's size (mnistlab.datasets.decoding).
FITS = ("stretch", "pad")
# The picture recipes of mnistlab.preprocess (digit, clothes, or none), for --kind.
KINDS = ("digit", "fashion", "plain")
# The model presets of mnistlab.models (tests/test_models.py keeps the two equal).
MODEL_NAMES = ("mlp", "lenet5", "cnn")
# The spec name of a model that is no preset (import-keras writes it; models.from_spec rebuilds it).
IMPORTED_MODEL = "sequential"
MODES = ("auto", "min", "max")
CONFIG_JSON = "config.json"  # a run folder's copy of its config, for people and for `train --config`


# -- the --augment spec (the transform itself is mnistlab.augment.Augment) ----------------------

FLIPS = ("none", "horizontal", "vertical", "both")
FILLS = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}  # our name → grid_sample's
# Keras's argument names, accepted as aliases so the lesson's numbers can be pasted as they are.
ALIASES = {
    "rotation_range": "rotation",
    "width_shift_range": "width_shift",
    "height_shift_range": "height_shift",
    "zoom_range": "zoom",
    "shear_range": "shear",
    "fill_mode": "fill",
}
FLIP_WARNING = (
    "flips change what a digit means (a mirrored 2 is no digit, a flipped 6 reads as a 9); "
    "use flip only for classes that stay themselves when mirrored"
)
# The --augment help of every command that takes it.
SPEC_HELP = (
    "comma-separated key=value with Keras ImageDataGenerator's meanings: rotation=DEG (angle drawn from ±DEG), "
    "shift=F (up to ±F of the width and height; width_shift=, height_shift= separately), zoom=Z (scale factor "
    "from [1-Z, 1+Z]; above 1 shows more, so the digit looks smaller; keep_aspect=true zooms both axes alike), "
    "shear=DEG (shear angle from ±DEG), flip=none|horizontal|vertical|both (flips change what digits mean), "
    "fill=nearest|constant|reflect (what fills the border); Keras's names (rotation_range=...) work too"
)


@dataclass(frozen=True)
class AugmentSpec:
    """The settings of ``mnistlab.augment.Augment``, checked, and its ``--augment`` spec string (no torch).

    ``shift`` sets both ``width_shift`` and ``height_shift`` unless those are given.

    >>> aug = AugmentSpec(rotation=10, shift=0.1, zoom=0.1)
    >>> str(aug)
    'rotation=10,shift=0.1,zoom=0.1'
    """

    rotation: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    shear: float = 0.0
    flip: str = "none"
    keep_aspect: bool = False
    width_shift: float | None = None
    height_shift: float | None = None
    fill: str = "nearest"

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float, hi_open: bool, unit: str) -> None:
            v = getattr(self, name)
            if v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"augment: {name} must be a number, got {v!r}")
            if not (lo <= v < hi if hi_open else lo <= v <= hi):
                right = ")" if hi_open else "]"
                raise ConfigError(f"augment: {name} must lie in [{lo:g}, {hi:g}{right}{unit}, got {v!r}")
            object.__setattr__(self, name, float(v))

        number("rotation", 0, 180, False, " degrees")
        number("shift", 0, 1, True, " (a fraction of the width/height)")
        number("width_shift", 0, 1, True, " (a fraction of the width)")
        number("height_shift", 0, 1, True, " (a fraction of the height)")
        number("zoom", 0, 1, True, " (factors drawn from [1-zoom, 1+zoom])")
        number("shear", 0, 90, True, " degrees")
        if self.flip not in FLIPS:
            raise ConfigError(f"augment: flip must be one of {', '.join(FLIPS)}, got {self.flip!r}")
        if self.fill not in FILLS:
            raise ConfigError(f"augment: fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        if not isinstance(self.keep_aspect, bool):
            raise ConfigError(f"augment: keep_aspect must be true or false, got {self.keep_aspect!r}")
        if self.flip != "none":
            warnings.warn(FLIP_WARNING, UserWarning, stacklevel=3)

    # -- the spec string -------------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> AugmentSpec:
        """``"rotation=45,shift=0.15,zoom=0.5,shear=0,flip=none"`` → ``Augment``; ``ConfigError`` names a bad field.

        Keras's names (``rotation_range``, ``width_shift_range``, ``zoom_range``, ...) are accepted too;
        ``""`` and ``"none"`` give an augmentation that changes nothing.

        >>> AugmentSpec.parse("rotation_range=45,zoom_range=0.5").rotation
        45.0
        """
        kwargs: dict[str, object] = {}
        known = {f.name for f in fields(cls)}
        text = spec.strip()
        if text.lower() in ("", "none"):
            return cls()
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            key, value = key.strip().lower().replace("-", "_"), value.strip()
            if key in ("horizontal_flip", "vertical_flip"):  # Keras's booleans
                if _parse_bool(key, value):
                    other = "vertical" if key == "horizontal_flip" else "horizontal"
                    current = kwargs.get("flip", "none")
                    kwargs["flip"] = "both" if current in (other, "both") else key.split("_")[0]
                continue
            key = ALIASES.get(key, key)
            if not eq or not value:
                raise ConfigError(f"augment: expected key=value, got {part!r} in {spec!r}")
            if key not in known:
                raise ConfigError(f"augment: unknown setting {key!r} in {spec!r} (known: {', '.join(sorted(known))})")
            if key in kwargs:
                raise ConfigError(f"augment: {key} given twice in {spec!r}")
            if key in ("flip", "fill"):
                kwargs[key] = value.lower()
            elif key == "keep_aspect":
                kwargs[key] = _parse_bool(key, value)
            else:
                try:
                    kwargs[key] = float(value)
                except ValueError:
                    raise ConfigError(f"augment: {key} must be a number, got {value!r}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v == f.default:
                continue
            parts.append(
                f"{f.name}={str(v).lower() if isinstance(v, bool) else format(v, 'g') if isinstance(v, float) else v}"
            )
        return ",".join(parts) or "none"


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"augment: {key} must be true or false, got {value!r}")


def split_count(n: int, split: float, flag: str = "validation_split") -> int:
    """How many of ``n`` images a validation split holds out (the last ones, as Keras's ``validation_split``):
    a fraction in (0, 1), a count ≥ 1, or 0 for none. One rule for ``fit`` and for run configs.

    >>> split_count(60000, 0.1), split_count(60000, 5000), split_count(10, 0)
    (6000, 5000, 0)
    """
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not math.isfinite(split) or split < 0:
        raise ConfigError(f"{flag} must be a fraction in [0, 1) or a count ≥ 1, got {split!r}")
    if split == 0:
        return 0
    if split >= 1 and split != int(split):
        raise ConfigError(f"{flag} ≥ 1 is a number of images and must be whole, got {split!r}")
    k = n - math.ceil(n * (1 - split)) if split < 1 else int(split)
    if not 1 <= k < n:
        raise ConfigError(
            f"{flag} {split!r} holds out {k} of {n} training images; it must leave some of both "
            f"(a fraction such as {flag} 0.1 fits any size, 0 validates on the test set)"
        )
    return k


def _val_split(v: float) -> float | int:
    if v == 0 or 0 < v < 1:
        return v
    if v >= 1 and v == int(v):
        return int(v)  # a count of images
    raise ValueError("must be 0 (none), a fraction in (0, 1) or a whole count ≥ 1")


def _device(v: str) -> str:
    if valid_device_name(v):
        return v
    raise ValueError(f"must be {DEVICE_CHOICES}")


def _augment(v: str) -> str:
    if v:  # fail before any data is loaded; its errors name the setting in the spec
        AugmentSpec.parse(v)
    return v


def setting(
    default: Any,
    help: str,
    *,
    label: str = "",
    choices: tuple[str, ...] = (),
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
    resume: bool = False,
    cli: bool = True,
    metavar: str | None = None,
    shown: str = "",
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A ``TrainConfig`` field with what the CLI, the checks and resume need to know of it.

    ``resume=True``: a resumed run may change it (where and how long to run, not what is learnt).
    ``cli=False``: no ``mnistlab train`` flag for it. ``shown``: how ``--help`` names the default.
    ``convert``: a last check that returns the value to keep, or raises ``ValueError(rule)``.
    """
    meta = {"help": help, "label": label, "choices": choices, "at_least": at_least, "above": above,
            "below": below, "resume": resume, "cli": cli, "metavar": metavar, "shown": shown,
            "convert": convert}  # fmt: skip
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """All settings of a run, checked when built. ``epochs`` is always the total to reach, also when resuming.

    Each field's metadata (see :func:`setting`) gives its ``mnistlab train`` flag, help, choices and bounds,
    and whether a resume may change it.

    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
    mnistlab.errors.ConfigError: epochs must be ≥ 1, got 0 (--epochs)
    """

    dataset: str = setting("mnist", "mnist, fashion_mnist, or a data set path")
    data_dir: str | None = setting(
        None,
        "folder holding the data set's IDX files (looked at first)",
        resume=True,
        metavar="DIR",
        shown="the usual places",
    )
    model: str = setting(
        "mlp",
        f"model preset ({IMPORTED_MODEL}: a model brought in by import-keras, trained further with --init-from)",
        choices=(*MODEL_NAMES, IMPORTED_MODEL),
    )
    normalize: bool = setting(False, "standardise the input with the training images' mean and std (a model layer)")
    width: int | None = setting(None, "hidden units (mlp) or base channels (cnn)", at_least=1, shown="the model's")
    epochs: int = setting(5, "total epochs to reach, also when resuming", at_least=1, resume=True)
    batch_size: int = setting(32, "training batch size", label="batch size", at_least=1)
    optimizer: str = setting(
        "adam",
        "optimizer; muon: Muon for the hidden layers' weights, AdamW at 0.4x the rate for the rest",
        choices=OPTIMIZERS,
    )
    lr: float = setting(1e-3, "peak learning rate", label="learning rate", above=0)
    momentum: float = setting(0.9, "momentum for sgd/rmsprop", at_least=0)
    weight_decay: float = setting(0.0, "weight decay", label="weight decay", at_least=0)
    schedule: str = setting("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup: float = setting(0.25, "one-cycle warm-up fraction", at_least=0, below=1)
    label_smoothing: float = setting(0.0, "label smoothing", label="label smoothing", at_least=0, below=1)
    augment: str = setting(
        "",
        f"augment training batches, e.g. rotation=45,shift=0.15,zoom=0.5,shear=0,flip=none; {SPEC_HELP}. "
        "See it first with `mnistlab augment preview`",
        metavar="SPEC",
        convert=_augment,
    )
    precision: str = setting(
        "fp32",
        "bf16 runs convolutions and matmuls in bfloat16 under autocast, weights stay float32; auto takes bf16 "
        "only where the hardware has native bf16 units (a CPU with AMX or AVX512-BF16, a GPU with bf16), where "
        "it is faster, and fp32 elsewhere (bf16 is emulated, and slower, on other CPUs)",
        choices=PRECISIONS,
    )
    channels_last: bool = setting(False, "keep images channels-last in memory (faster bf16 convolutions on CPU)")
    seed: int = setting(0, "random seed; the same seed gives the same numbers")
    device: str = setting(
        "auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps", resume=True, convert=_device
    )
    threads: int = setting(
        0,
        "torch threads; 0 = auto: OMP_NUM_THREADS if set, else one per core less the cores other processes keep "
        "busy as the run starts (threads in lock step crawl beside a busy process); the run records the count "
        "and a resumed run keeps it, since it changes the last bits of the arithmetic",
        at_least=0,
        resume=True,
    )
    validation_freq: int = setting(1, "validate every N epochs", label="validation frequency", at_least=1)
    eval_batch_size: int = setting(4096, "batch size of evaluation", label="eval batch size", at_least=1)
    val_split: float = setting(
        0,
        "hold out the last N training images (or this fraction of them, taken before --limit-train) to "
        "validate on: the best checkpoint, early stopping and the plateau then never see the test set; "
        "0 = validate on the test set, as the lesson does",
        label="val split",
        metavar="N|FRACTION",
        convert=_val_split,
    )
    early_stopping: int = setting(
        0,
        "stop after PATIENCE epochs without --monitor improving, 0 = off",
        label="early stopping patience",
        at_least=0,
        metavar="PATIENCE",
    )
    reduce_lr_on_plateau: int = setting(
        0, "lower the learning rate after PATIENCE epochs without --monitor improving, 0 = off", at_least=0,
        label="plateau patience",
        metavar="PATIENCE",
    )  # fmt: skip
    tensorboard: str = setting(
        "", "write TensorBoard logs into DIR (needs the tensorboard extra)", resume=True, metavar="DIR"
    )
    monitor: str = setting(
        "val_sparse_categorical_accuracy", "metric that picks the best checkpoint, early stopping and the plateau",
        choices=MONITORS,
    )  # fmt: skip
    mode: str = setting("auto", "whether --monitor improves up or down; auto: max for accuracy, min for loss",
                        choices=MODES)  # fmt: skip
    save_every: int = setting(0, "also save 'last' every N steps, 0 = per epoch only", at_least=0, resume=True)
    limit_train: int = setting(0, "use only the first N training images, 0 = all", at_least=0)
    limit_test: int = setting(0, "use only the first N test images, 0 = all", at_least=0)
    preset: str = setting("", "the preset this config started from", cli=False)
    extra: dict = setting({}, "free-form notes kept with the run", cli=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Check every field against its schema; raise a one-line ``ConfigError`` naming the flag."""
        for f in fields(self):
            setattr(self, f.name, check_setting(f, getattr(self, f.name)))
        return self

    @property
    def monitor_mode(self) -> str:
        """``mode`` with ``"auto"`` resolved as Keras does: ``max`` for an accuracy, ``min`` for a loss."""
        if self.mode != "auto":
            return self.mode
        return "max" if "acc" in self.monitor else "min"

    def validation_count(self, n_train: int) -> int:
        """How many of ``n_train`` training images ``val_split`` holds out (the last ones, as in Keras).

        >>> TrainConfig(val_split=0.1).validation_count(60000), TrainConfig(val_split=5000).validation_count(60000)
        (6000, 5000)
        """
        return split_count(n_train, self.val_split, flag="--val-split")

    @property
    def validated_on(self) -> str:
        """Which images the validation metrics (and so the best checkpoint) come from, in words.

        >>> TrainConfig(val_split=5000).validated_on, TrainConfig().validated_on
        ('the last 5000 training images', 'the test set')
        """
        v = self.val_split
        if not v:
            return "the test set"
        return f"the last {v:g} of the training images" if v < 1 else f"the last {v} training images"

    def trainer_kwargs(self) -> dict[str, Any]:
        """The ``Trainer`` constructor's keyword arguments from this config (the augment callable is the caller's:
        ``augment_spec`` is its string).

        >>> TrainConfig(lr=0.01).trainer_kwargs()["lr"]
        0.01
        """
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "warmup": self.warmup,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "augment_spec": self.augment,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """The config in a ``config.json`` file, or in a run folder's ``config.json``.

        >>> TrainConfig.read("runs/mnist-mlp").epochs        # doctest: +SKIP
        3
        """
        p = Path(path)
        file = p / CONFIG_JSON if p.is_dir() else p
        try:
            d = json.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such config file") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{file}: not a readable JSON config ({e})") from None
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with ``overrides`` (``None`` values are ignored), checked."""
        given = {k: v for k, v in overrides.items() if v is not None}
        for k in given:
            field_named(k)
        return dataclasses.replace(self, **given)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from ``to_dict()``'s output (``config.json``); settings it lacks take their defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**d)


def field_named(name: str) -> dataclasses.Field:
    """The ``TrainConfig`` field ``name`` (``ConfigError`` for an unknown one)."""
    for f in fields(TrainConfig):
        if f.name == name:
            return f
    raise ConfigError(f"unknown setting {name!r}")


def flag(f: dataclasses.Field | str) -> str:
    """The ``mnistlab train`` flag of a config field: ``batch_size`` → ``--batch-size``."""
    return "--" + (f if isinstance(f, str) else f.name).replace("_", "-")


def kind(f: dataclasses.Field) -> type:
    """The Python type a field holds (``int | None`` → ``int``)."""
    return {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}[str(f.type).split("|")[0].strip()]


def cli_fields() -> list[dataclasses.Field]:
    """The fields that ``mnistlab train`` has a flag for, in schema order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def _message(f: dataclasses.Field, rule: str, value: object) -> str:
    label = f.metadata.get("label") or f.name.replace("_", " ")
    return f"{label} {rule}, got {value!r} ({flag(f)})"


KIND_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "a JSON object"}


def check_setting(f: dataclasses.Field | str, value: Any) -> Any:
    """``value`` checked against the schema of the setting ``f`` (a ``TrainConfig`` field or its name), as it
    is kept (a whole number for a float setting becomes a float); a one-line ``ConfigError`` naming the flag
    otherwise. What checks a config, and what a ``Trainer`` built without one can check its arguments with.

    >>> check_setting("lr", 1)
    1.0
    >>> check_setting("label_smoothing", 1.0)
    Traceback (most recent call last):
    mnistlab.errors.ConfigError: label smoothing must lie in [0, 1), got 1.0 (--label-smoothing)
    """
    f = field_named(f) if isinstance(f, str) else f
    m, k, v = f.metadata, kind(f), value
    if v is None and "None" in str(f.type):
        return v
    ok = isinstance(v, k) or (k is float and isinstance(v, int))
    if not ok or (k is not bool and isinstance(v, bool)) or (k is float and not math.isfinite(v)):
        raise ConfigError(_message(f, f"must be {KIND_WORDS[k]}", value))
    if k is float:
        v = float(v)
    if m.get("choices") and v not in m["choices"]:
        raise ConfigError(_message(f, f"must be one of {', '.join(m['choices'])}", value))
    lo, above, hi = m.get("at_least"), m.get("above"), m.get("below")
    if lo is not None and hi is not None:
        if not lo <= v < hi:
            raise ConfigError(_message(f, f"must lie in [{lo:g}, {hi:g})", value))
    elif lo is not None and v < lo:
        raise ConfigError(_message(f, f"must be ≥ {lo:g}", value))
    elif above is not None and not v > above:
        raise ConfigError(_message(f, f"must be > {above:g}", value))
    if m.get("convert"):
        try:
            v = m["convert"](v)
        except ConfigError:
            raise  # already one line naming the setting (an augment spec's own errors)
        except ValueError as e:
            raise ConfigError(_message(f, str(e), value)) from None
    return v


# -- resume: which settings may change ---------------------------------------------------------


def resumable() -> tuple[str, ...]:
    """The settings a resumed run may change (where and how long it runs, never what it learns)."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("resume"))


def resume_changes(saved: TrainConfig | dict, new: TrainConfig | dict) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between ``saved`` and ``new`` although a resume may not change them:
    ``{name: (saved value, new value)}``, empty when ``new`` may continue ``saved``.

    >>> resume_changes(TrainConfig(), TrainConfig(epochs=9, lr=0.01))
    {'lr': (0.001, 0.01)}
    """
    a = saved.to_dict() if isinstance(saved, TrainConfig) else saved
    b = new.to_dict() if isinstance(new, TrainConfig) else new
    defaults = TrainConfig().to_dict()  # a setting missing from an older config had its default
    free = set(resumable()) | {"preset", "extra"}
    return {
        k: (a.get(k, defaults[k]), b.get(k, defaults[k]))
        for k in defaults
        if k not in free and a.get(k, defaults[k]) != b.get(k, defaults[k])
    }


def merge_resume(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The config of a resumed run: ``saved`` with the ``overrides`` a resume may make (``None`` = not given).

    Raises a one-line ``ConfigError`` naming the first setting that may not change.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    for k in given:
        field_named(k)
    merged = TrainConfig.from_dict({**saved.to_dict(), **given})
    for k, (was, now) in resume_changes(saved, merged).items():
        raise ConfigError(
            f"cannot change {k} when resuming ({flag(k)}: saved {was!r}, given {now!r}); "
            f"only {', '.join(flag(n) for n in resumable())} may change"
        )
    return merged


# Settings that define each preset; explicit options override them.
PRESETS: dict[str, dict] = {
    # The lesson, exactly: Flatten → Dense 128 relu → Dense 10, Adam 1e-3, batch 32, 5 epochs.
    # It keeps the lesson's validation on the test set (val_split=0).
    "lesson": dict(model="mlp", epochs=5, batch_size=32, optimizer="adam", lr=1e-3, schedule="constant", val_split=0),
    # Same MLP; standardised input, batch 1024, a one-cycle schedule and label smoothing: ≥ 97.8% in 6 epochs
    # on the 55,000 images left after the validation split, in bf16 where the CPU has bf16 units (the hand-
    # written step's two large products on AMX / AVX512-BF16) and fp32 elsewhere. Chosen on validation
    # accuracy among batch 768-1024, lr 2e-2 to 4e-2, 5-6 epochs (session 8, seeds 0-4 in bf16: last-epoch
    # validation 98.38/98.40/98.36/98.30/98.20%, test 97.92/98.03/98.02/98.04/97.93%; fp32 seeds 0-2 test
    # 98.02/98.11/98.07%). Batch 256 with lr 1e-2 for 3 epochs (the preset before) gave 97.96/97.86/97.99%
    # at ~27% of the fp32 matmul peak; batch 1024 runs at 66-71% of it in bf16 (45% in fp32), `make bench` here.
    "fast": dict(
        model="mlp",
        normalize=True,
        precision="auto",
        epochs=6,
        batch_size=1024,
        optimizer="adam",
        lr=3e-2,
        schedule="onecycle",
        label_smoothing=0.1,
        val_split=5000,  # the best checkpoint is chosen on 5,000 held-out training images, never the test set
    ),
    # The CNN preset: bf16 autocast + channels_last (AMX/AVX-512 kernels), light augmentation, one-cycle, and
    # Muon (orthogonalised momentum) for the convolution kernels with AdamW for the rest (issue 16): width 16
    # for 4 epochs, 4.96 TFLOP of training (mnistlab.models.training_flops). Seeds 0-4 here (session 7,
    # trained on 55,000 images, checkpoint chosen on the other 5,000): 99.65/99.61/99.57/99.55/99.58% (seeds 0-9:
    # median 99.575%, 99.50-99.65%); the same network with AdamW (lr 2e-2, weight decay 0.1)
    # 99.63/99.52/99.56/99.53/99.51%; the preset before (width 24, Adam 6e-3, 5 epochs, 13.8 TFLOP) 99.58% median
    # of seeds 0-2.
    "best": dict(
        model="cnn",
        width=16,
        precision="auto",
        channels_last=True,
        epochs=4,
        batch_size=256,
        optimizer="muon",
        lr=5e-2,
        weight_decay=0.1,
        schedule="onecycle",
        warmup=0.2,
        label_smoothing=0.1,
        augment="rotation=10,shift=0.1,zoom=0.1",
        val_split=5000,
    ),
}
# The accuracy ceiling (issue 16): the best preset's CNN and Muon at width 32 for 12 epochs: 58 TFLOP of training
# (mnistlab.models.training_flops); seeds 0-4 here 99.73/99.73/99.73/99.66/99.73%; as ensembles seeds 0-2 99.77%,
# 2-4 99.69%, all five 99.73% (with AdamW 6e-3 and weight decay 0.05, session 5: 99.70/99.72/99.63/99.69/99.68%).
# `python -m benchmarks record` measures it; pair it with `mnistlab ensemble RUN... --tta`.
PRESETS["record"] = {**PRESETS["best"], "width": 32, "epochs": 12}

# Where a data set needs other settings under the same preset, applied on top of it (explicit options
# still win). Fashion-MNIST: rotating, zooming or mirroring clothes cost accuracy in every run measured
# here; it keeps the width (24) and epochs (7) it was tuned with under Adam: 19.3 TFLOP, seeds 0-2 here
# 93.62/93.85/93.47% with Muon (session 7; width 16 not measured there), 93.45/93.36/93.09% with Adam 6e-3.
DATASET_PRESETS: dict[tuple[str, str], dict] = {
    ("best", "fashion_mnist"): dict(width=24, epochs=7, augment=""),
    ("record", "fashion_mnist"): dict(augment=""),  # as for best: rotation and zoom cost accuracy on clothes
}


def from_preset(name: str, **overrides: object) -> TrainConfig:
    """A config from a preset, with ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(k for k in overrides if k not in fields)
    if bad:
        raise ConfigError(f"unknown settings: {', '.join(bad)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    dataset = str(given.get("dataset", PRESETS[name].get("dataset", TrainConfig.dataset)))
    values = {**PRESETS[name], **DATASET_PRESETS.get((name, dataset), {}), "preset": name, **given}
    return TrainConfig(**values).validate()
