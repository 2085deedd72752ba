"""The run config: its fields, their checks, the presets, and what a resume may change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnistlab.config import (
    TrainConfig,
    check_setting,
    cli_fields,
    flag,
    from_preset,
    merge_resume,
    resumable,
    resume_changes,
)
from mnistlab.errors import ConfigError
from tests.conftest import run_cli


@pytest.mark.parametrize("value", [-1, 1.5, float("inf"), float("nan"), True, "5000"])
def test_val_split_refuses_what_is_neither_a_fraction_nor_a_count(value: object) -> None:
    with pytest.raises(ConfigError, match="val split"):
        TrainConfig(val_split=value).validate()  # type: ignore[arg-type]


def test_val_split_fraction_and_count_hold_out_the_last_images() -> None:
    assert TrainConfig(val_split=0.1).validate().validation_count(60000) == 6000
    assert TrainConfig(val_split=5000.0).validate().val_split == 5000
    with pytest.raises(ConfigError, match="holds out 100 of 100 training images; it must leave some of both"):
        TrainConfig(val_split=100).validation_count(100)


def test_presets_hold_out_5000_images_except_the_lesson() -> None:
    assert from_preset("lesson").val_split == 0
    assert from_preset("fast").val_split == from_preset("best").val_split == 5000


def test_every_preset_is_in_both_readmes_tables() -> None:
    from mnistlab.config import PRESETS

    root = Path(__file__).resolve().parents[1]
    for readme in ("README.md", "README.zh.md"):
        text = (root / readme).read_text(encoding="utf-8")
        missing = [name for name in PRESETS if f"\n| `{name}`" not in text]
        assert not missing, f"{readme} has no table row for preset(s) {missing}"


def test_record_preset_is_the_best_cnn_wider_and_longer() -> None:
    record, best = from_preset("record"), from_preset("best")
    assert (record.model, record.optimizer, record.val_split) == ("cnn", "muon", 5000)
    assert (record.width, record.epochs, best.width, best.epochs) == (32, 12, 16, 4)
    assert record.weight_decay > 0 and record.augment == best.augment
    assert from_preset("record", dataset="fashion_mnist").augment == ""
    fashion = from_preset("best", dataset="fashion_mnist")  # clothes: wider, longer, not augmented
    assert (fashion.optimizer, fashion.width, fashion.epochs, fashion.augment) == ("muon", 24, 7, "")
    opt = record.trainer_kwargs()
    assert opt["optimizer"] == "muon" and opt["weight_decay"] == record.weight_decay


def test_callback_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="patience"):
        TrainConfig(early_stopping=-1).validate()
    with pytest.raises(ConfigError, match="monitor must be one of"):
        TrainConfig(monitor="val_accuracy").validate()
    with pytest.raises(ConfigError, match="mode must be one of"):
        TrainConfig(mode="up").validate()
    assert TrainConfig().monitor_mode == "max" and TrainConfig(monitor="val_loss").monitor_mode == "min"
    assert TrainConfig(monitor="val_loss", mode="max").monitor_mode == "max"


def test_trainer_kwargs_carry_the_optimisation_settings() -> None:
    kw = from_preset("best", seed=3).trainer_kwargs()
    assert kw["seed"] == 3 and kw["precision"] == "auto" and kw["channels_last"] is True
    assert kw["augment_spec"] == "rotation=10,shift=0.1,zoom=0.1" and kw["schedule"] == "onecycle"


# -- one schema: the CLI's flags, the checks and the resume rule all come from the fields -------------


def test_every_setting_has_a_train_flag_and_the_flag_reaches_the_config() -> None:
    from mnistlab.cli import build_parser
    from mnistlab.cli.train import config_from_args

    parser = build_parser()
    values = {"dataset": "fashion_mnist", "data_dir": "/data", "model": "cnn", "width": 8, "epochs": 7,
              "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.8, "weight_decay": 0.001,
              "schedule": "cosine", "warmup": 0.1, "label_smoothing": 0.05, "augment": "rotation=5",
              "precision": "bf16", "seed": 4, "device": "cpu", "threads": 2, "validation_freq": 2,
              "eval_batch_size": 512, "val_split": 0.1, "early_stopping": 3, "reduce_lr_on_plateau": 2,
              "tensorboard": "tb", "monitor": "val_loss", "mode": "min", "save_every": 10, "limit_train": 100,
              "limit_test": 50}  # fmt: skip
    argv = ["train", "--normalize", "--channels-last"]
    for name, v in values.items():
        argv += [flag(name), str(v)]
    config = config_from_args(parser.parse_args(argv))
    assert {f.name for f in cli_fields()} == set(values) | {"normalize", "channels_last"}
    assert {k: getattr(config, k) for k in values} == values
    assert config.normalize is config.channels_last is True
    # A whole number is a count of images, a fraction a share of them.
    assert config_from_args(parser.parse_args(["train", "--val-split", "5000"])).val_split == 5000


def test_help_comes_from_the_schema() -> None:
    r = run_cli("train", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for f in cli_fields():
        assert flag(f) in text
        assert " ".join(f.metadata["help"].split())[:40] in text, f.name
    assert "--early-stopping PATIENCE" in text and "(default: from --preset)" in text


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--val-split", "1.5"], "val split must be 0 (none), a fraction in (0, 1) or a whole count ≥ 1, got 1.5 (--val-split)"),
        (["--warmup", "1"], "warmup must lie in [0, 1), got 1 (--warmup)"),
        (["--early-stopping", "-2"], "early stopping patience must be ≥ 0, got -2 (--early-stopping)"),
        (["--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu' (--device)"),
        (["--width", "0"], "width must be ≥ 1, got 0 (--width)"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_naming_the_flag(argv: list[str], msg: str, tmp_path: Path) -> None:
    r = run_cli("train", "--out", str(tmp_path / "x"), *argv)
    assert r.returncode == 2 and r.stderr.strip().endswith(msg) and r.stderr.count("\n") == 1, r.stderr


def test_a_config_file_is_checked_like_flags(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"epochs": "5"}))
    with pytest.raises(ConfigError, match=r"config.json: epochs must be a whole number, got '5' \(--epochs\)"):
        TrainConfig.read(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 5, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown config fields: colour"):
        TrainConfig.read(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="no such config file"):
        TrainConfig.read(tmp_path / "nothing.json")


def test_resume_may_change_only_where_and_how_long() -> None:
    assert set(resumable()) == {"epochs", "device", "threads", "save_every", "data_dir", "tensorboard"}
    saved = from_preset("fast")
    assert resume_changes(saved, saved.replace(epochs=9, threads=2)) == {}
    assert resume_changes(saved, saved.replace(lr=0.1, val_split=0)) == {"lr": (0.03, 0.1), "val_split": (5000, 0)}
    # A config saved before a setting existed had its default.
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "early_stopping"}
    assert resume_changes(old, TrainConfig()) == {}
    assert resume_changes(old, TrainConfig(early_stopping=2)) == {"early_stopping": (0, 2)}
    assert merge_resume(saved, {"epochs": 6, "lr": None}).epochs == 6
    with pytest.raises(ConfigError, match=r"cannot change lr when resuming \(--lr: saved 0.03, given 0.1\); only --"):
        merge_resume(saved, {"lr": 0.1})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        merge_resume(saved, {"colour": "red"})


def test_train_config_reruns_a_run_with_flags_overriding(small_run: Path, tmp_path: Path) -> None:
    rerun = tmp_path / "rerun"
    r = run_cli("train", "--config", str(small_run / "config.json"), "--epochs", "1", "--out", str(rerun), "--quiet")
    assert r.returncode == 0, r.stderr
    first, again = TrainConfig.read(small_run), TrainConfig.read(rerun)
    assert again == first.replace(epochs=1)
    r = run_cli("train", "--config", str(small_run), "--preset", "best", "--out", str(tmp_path / "no"))
    assert r.returncode == 2 and "give --config or --preset, not both" in r.stderr


def test_trainer_kwargs_build_a_trainer_as_the_config_says() -> None:
    from mnistlab.engine import Trainer
    from mnistlab.models import build_model

    config = from_preset("fast", optimizer="sgd", lr=0.05, momentum=0.5, device="cpu")
    trainer = Trainer(build_model("mlp"), **config.trainer_kwargs(), verbose=0)
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD) and group["lr"] == 0.05 and group["momentum"] == 0.5
    assert str(trainer.device) == "cpu"


def test_check_setting_checks_one_value_as_the_config_would() -> None:
    assert check_setting("val_split", 5000.0) == 5000 and check_setting("width", None) is None
    with pytest.raises(ConfigError, match=r"^optimizer must be one of adam, .*, got 'lion' \(--optimizer\)$"):
        check_setting("optimizer", "lion")
    with pytest.raises(ConfigError, match=r"^epochs must be a whole number, got 2.5 \(--epochs\)$"):
        check_setting("epochs", 2.5)
