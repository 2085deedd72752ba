"""The run config: its fields, their checks, the presets, and what a resume may change."""

from __future__ import annotations

import pytest

from mnistlab.config import TrainConfig, from_preset
from mnistlab.errors import ConfigError


@pytest.mark.parametrize("value", [-1, 1.5, float("inf"), float("nan"), True, "5000"])
def test_val_split_refuses_what_is_neither_a_fraction_nor_a_count(value: object) -> None:
    with pytest.raises(ConfigError, match="val split"):
        TrainConfig(val_split=value).validate()  # type: ignore[arg-type]


def test_val_split_fraction_and_count_hold_out_the_last_images() -> None:
    assert TrainConfig(val_split=0.1).validate().validation_count(60000) == 6000
    assert TrainConfig(val_split=5000.0).validate().val_split == 5000
    with pytest.raises(ConfigError, match="leaves no training images"):
        TrainConfig(val_split=100).validation_count(100)


def test_presets_hold_out_5000_images_except_the_lesson() -> None:
    assert from_preset("lesson").val_split == 0
    assert from_preset("fast").val_split == from_preset("best").val_split == 5000


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
    assert kw["seed"] == 3 and kw["precision"] == "bf16" and kw["channels_last"] is True
    assert kw["augment_spec"] == "rotation=10,shift=0.1,zoom=0.1" and kw["schedule"] == "onecycle"
