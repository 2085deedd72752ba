"""`mnistlab train` / `evaluate` end to end on full MNIST, and bad arguments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mnistlab.cli import main
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "fast"
    r = run_cli("train", "--preset", "fast", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_fast_preset_on_full_mnist_reaches_97_5(fast_run: tuple[Path, str]) -> None:
    out, stdout = fast_run
    result = json.loads((out / "result.json").read_text())
    assert result["test"]["sparse_categorical_accuracy"] >= 0.975
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy 0.9") and "training time" in last
    assert "Total params: 101,770" in (out / "summary.txt").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "fast" and config["model"] == "mlp"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, 7)]
    # The fast preset validates on the last 5,000 training images: the test set played no part in training.
    assert result["validated_on"] == "the last 5000 training images"
    assert float(rows[-1]["val_sparse_categorical_accuracy"]) != result["test"]["sparse_categorical_accuracy"]
    assert json.loads((out / "history.json").read_text())["best"]["monitor"] == "val_sparse_categorical_accuracy"
    assert (out / "last.safetensors").is_file() and (out / "best.safetensors").is_file()


def test_evaluate_prints_accuracy_and_per_class(fast_run: tuple[Path, str]) -> None:
    out, _ = fast_run
    r = run_cli("evaluate", str(out), "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    result = json.loads((out / "result.json").read_text())
    assert ev["sparse_categorical_accuracy"] == pytest.approx(result["test"]["sparse_categorical_accuracy"], abs=1e-6)
    assert len(ev["per_class"]) == 10 and min(ev["per_class"].values()) > 0.9
    text = run_cli("evaluate", str(out)).stdout
    assert "accuracy" in text and text.count("\n") == 11


def test_existing_run_is_not_overwritten(fast_run: tuple[Path, str]) -> None:
    out, _ = fast_run
    before = (out / "last.safetensors").read_bytes()
    r = run_cli("train", "--out", str(out), "--limit-train", "1000", "--epochs", "1")
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert (out / "last.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--optimizer", "adamx"], "invalid choice: 'adamx'"),
        (["--epochs", "-3"], "epochs must be ≥ 1, got -3"),
        (["--batch-size", "0"], "batch size must be ≥ 1, got 0"),
        (["--lr", "-1"], "learning rate must be > 0"),
        (["--dataset", "/etc"], "/etc: not a data set"),
        (["--dataset", "no/such/place"], "no such file or folder"),
        (["--resume", "/tmp/definitely-not-a-run"], "not a run folder"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], msg: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        code = main(["train", "--out", str(tmp_path / "x"), *args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert code == 2
    assert not (tmp_path / "x" / "last.safetensors").exists()


def test_dry_run_like_quick_train_on_a_subset(tmp_path: Path) -> None:
    r = run_cli(
        "train", "--preset", "lesson", "--epochs", "1", "--limit-train", "2000", "--out", str(tmp_path / "q"), "--quiet"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("test accuracy")


def test_best_preset_takes_fashion_settings_and_explicit_options_win() -> None:
    from mnistlab.config import PRESETS, from_preset

    mnist_cfg = from_preset("best")
    assert mnist_cfg.augment == PRESETS["best"]["augment"] and mnist_cfg.epochs == PRESETS["best"]["epochs"]
    fashion = from_preset("best", dataset="fashion_mnist")
    assert fashion.augment == "" and fashion.epochs == 7 and fashion.model == "cnn"
    assert from_preset("best", dataset="fashion_mnist", epochs=2, augment="shift=0.1").augment == "shift=0.1"
    assert from_preset("best", dataset="fashion_mnist", epochs=2).epochs == 2
    assert from_preset("fast", dataset="fashion_mnist").augment == ""
