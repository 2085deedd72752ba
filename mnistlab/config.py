"""What defines a training run: one dataclass, saved in every checkpoint, plus the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mnistlab.devices import DEVICE_CHOICES, valid_device_name
from mnistlab.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
SCHEDULES = ("constant", "onecycle", "cosine", "step")


@dataclass
class TrainConfig:
    """All settings of a run. ``epochs`` is always the total to reach, also when resuming."""

    dataset: str = "mnist"
    data_dir: str | None = None
    model: str = "mlp"
    normalize: bool = False
    width: int | None = None
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.25
    label_smoothing: float = 0.0
    augment: str = ""
    precision: str = "fp32"
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    validation_freq: int = 1
    eval_batch_size: int = 4096
    monitor: str = "val_sparse_categorical_accuracy"
    mode: str = "max"
    save_every: int = 0
    limit_train: int = 0
    limit_test: int = 0
    preset: str = ""
    extra: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        def need(ok: bool, what: str, value: object) -> None:
            if not ok:
                raise ConfigError(f"{what}, got {value!r}")

        need(self.epochs >= 1, "epochs must be ≥ 1", self.epochs)
        need(self.batch_size >= 1, "batch size must be ≥ 1", self.batch_size)
        need(self.lr > 0, "learning rate must be > 0", self.lr)
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}", self.optimizer)
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}", self.schedule)
        need(0 <= self.label_smoothing < 1, "label smoothing must lie in [0, 1)", self.label_smoothing)
        need(0 <= self.warmup < 1, "warmup must lie in [0, 1)", self.warmup)
        need(self.weight_decay >= 0, "weight decay must be ≥ 0", self.weight_decay)
        need(self.validation_freq >= 1, "validation frequency must be ≥ 1", self.validation_freq)
        need(self.eval_batch_size >= 1, "eval batch size must be ≥ 1", self.eval_batch_size)
        need(self.mode in ("max", "min"), "mode must be 'max' or 'min'", self.mode)
        need(self.precision in ("fp32", "bf16"), "precision must be fp32 or bf16", self.precision)
        if self.augment:  # fail before any data is loaded
            from mnistlab.augment import Augment

            Augment.parse(self.augment)
        need(valid_device_name(self.device), f"device must be {DEVICE_CHOICES}", self.device)
        need(
            self.threads >= 0 and self.save_every >= 0,
            "threads and save_every must be ≥ 0",
            (self.threads, self.save_every),
        )
        need(self.limit_train >= 0 and self.limit_test >= 0, "limits must be ≥ 0", (self.limit_train, self.limit_test))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**d)


# Settings that define each preset; explicit options override them.
PRESETS: dict[str, dict] = {
    # The lesson, exactly: Flatten → Dense 128 relu → Dense 10, Adam 1e-3, batch 32, 5 epochs.
    "lesson": dict(model="mlp", epochs=5, batch_size=32, optimizer="adam", lr=1e-3, schedule="constant"),
    # Same MLP; standardised input, larger batch, a one-cycle schedule and label smoothing reach ≥ 97.8%
    # in 3 epochs (measured here: 98.00% median of seeds 0-2, 97.98% of seeds 3-5).
    "fast": dict(
        model="mlp",
        normalize=True,
        epochs=3,
        batch_size=384,
        optimizer="adam",
        lr=1.5e-2,
        schedule="onecycle",
        label_smoothing=0.1,
    ),
    # The CNN preset: bf16 autocast + channels_last (AMX/AVX-512 kernels), light augmentation, one-cycle.
    # `make bench-best` here: 99.62% median of 3 seeds in 98.8 s of training (Fashion-MNIST: 93.55%, 127.7 s).
    "best": dict(
        model="cnn",
        precision="bf16",
        channels_last=True,
        epochs=5,
        batch_size=256,
        optimizer="adam",
        lr=6e-3,
        schedule="onecycle",
        warmup=0.2,
        label_smoothing=0.1,
        augment="rotation=10,shift=0.1,zoom=0.1",
    ),
}

# Where a data set needs other settings under the same preset, applied on top of it (explicit options
# still win). Fashion-MNIST: rotating, zooming or mirroring clothes cost accuracy in every run measured
# here; 6 epochs gave 93.56% (seed 0), 7 gave 93.58% (seed 1), so it takes 7 for margin.
DATASET_PRESETS: dict[tuple[str, str], dict] = {
    ("best", "fashion_mnist"): dict(epochs=7, augment=""),
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
