"""A run's numbers: its history from any source, and its model's predictions on the test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab import plots
from mnistlab.analysis import Predictions, load_history, predict_run
from mnistlab.engine import ACC, History
from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.runs import evaluate_run


@pytest.fixture(scope="module")
def preds(small_run: Path) -> Predictions:
    return predict_run(small_run)


def test_history_from_a_history_object_a_dict_or_keras(small_run: Path) -> None:
    d = json.loads((small_run / "history.json").read_text())
    for source in (History.from_dict(d), d):
        assert len(plots.plot_history(source).axes) == 2
    # What a Keras user has in hand: history.history with metrics=["accuracy"].
    keras = {
        "loss": [0.5, 0.3, 0.2],
        "accuracy": [0.8, 0.9, 0.95],
        "val_loss": [0.4, 0.3, 0.25],
        "val_accuracy": [0.85, 0.9, 0.92],
    }
    fig = plots.plot_history(keras)
    labels = {ln.get_label(): list(ln.get_xdata()) for ln in fig.axes[0].get_lines()}
    assert labels == {"Training Accuracy": [1, 2, 3], "Validation Accuracy": [1, 2, 3]}


def test_metrics_csv_stands_in_for_a_missing_history_json(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(small_run, run)
    (run / "history.json").unlink()
    from_csv, from_json = load_history(run), load_history(small_run)
    assert from_csv.epoch == from_json.epoch and from_csv.val_epoch == from_json.val_epoch
    for k, v in from_json.history.items():
        np.testing.assert_allclose(from_csv.history[k], v, rtol=1e-5)
    assert len(plots.plot_history(run).axes) == 2


def test_bad_run_folders_get_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such run folder"):
        load_history(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a run folder"):
        load_history(tmp_path / "empty")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no finished epoch yet"):
        plots.plot_history(fresh)
    (fresh / "history.json").write_text('{"history": {"loss": [1.0]}, "epoch": [0, 1]}')
    with pytest.raises(CheckpointError, match="'loss' has 1 values for 2 epochs"):
        load_history(fresh)
    (fresh / "history.json").write_text('{"history": {}, "epoch": []}')
    with pytest.raises(CheckpointError, match="no finished epoch yet"):
        load_history(fresh)
    (fresh / "history.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="history.json: not valid JSON"):
        load_history(fresh)
    with pytest.raises(CheckpointError, match="no finished epoch yet"):
        load_history(History())


# -- predictions ----------------------------------------------------------------------------------


def test_predictions_agree_with_evaluate(small_run: Path, preds: Predictions) -> None:
    # evaluate_run computes accuracy and per-class accuracy with its own code, from logits.
    ev = evaluate_run(small_run)
    cm = preds.confusion()
    assert cm.sum() == len(preds.y) == ev["n"] == 10_000
    assert cm.trace() / cm.sum() == pytest.approx(ev[ACC], abs=1e-6)
    assert preds.accuracy == pytest.approx(ev[ACC], abs=1e-6)
    assert preds.loss == pytest.approx(ev["loss"], rel=1e-4)
    np.testing.assert_allclose(preds.per_class_accuracy(), list(ev["per_class"].values()), atol=1e-6)
    np.testing.assert_array_equal(cm.sum(1), np.bincount(preds.y, minlength=10))


def test_mistakes_are_the_most_confident_wrong_predictions(preds: Predictions) -> None:
    idx = preds.mistakes(12)
    pred = preds.pred
    assert len(idx) == 12 and (pred[idx] != preds.y[idx]).all()
    conf = preds.probs[idx, pred[idx]]
    assert (np.diff(conf) <= 0).all()
    wrong = np.flatnonzero(pred != preds.y)
    others = np.setdiff1d(wrong, idx)
    assert conf.min() >= preds.probs[others, pred[others]].max()


def test_predictions_check_their_shapes() -> None:
    with pytest.raises(ConfigError, match="probs has 3 columns for 2 class names"):
        Predictions(np.zeros((2, 28, 28), np.uint8), [0, 1], np.ones((2, 3)) / 3, ("a", "b"))
    with pytest.raises(ConfigError, match="predictions need x"):
        Predictions(np.zeros((3, 28, 28), np.uint8), [0, 1], np.ones((2, 2)) / 2, ("a", "b"))


# -- test-time augmentation and ensembles ------------------------------------------------------------


def test_shifts_move_the_image_and_fill_with_background() -> None:
    from mnistlab.analysis import TTA_SHIFTS, shifted

    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # one bright pixel in the middle
    for dy, dx in TTA_SHIFTS:
        moved = shifted(x, dy, dx)[0, 0]
        assert moved.sum() == 1.0 and moved[2 + dy, 2 + dx] == 1.0
    corner = torch.ones(1, 1, 3, 3)
    assert shifted(corner, 0, -1)[0, 0].tolist() == [[1, 1, 0]] * 3  # what comes in is 0


def test_tta_and_ensemble_average_probabilities(small_run: Path, mlp_run: Path, preds: Predictions) -> None:
    from mnistlab.analysis import TTA_SHIFTS, ensemble, shifted
    from mnistlab.inference import predict_proba
    from mnistlab.runfolder import RunFolder
    from mnistlab.tensors import images_to_tensor

    tta = predict_run(small_run, tta=True)
    model = RunFolder(small_run).load().model
    x = images_to_tensor(tta.x)
    by_hand = np.mean([predict_proba(model, shifted(x, dy, dx)) for dy, dx in TTA_SHIFTS], axis=0)
    np.testing.assert_allclose(tta.probs, by_hand, atol=1e-6)
    assert not np.allclose(tta.probs, preds.probs)  # the shifts do change the answers
    assert abs(tta.accuracy - preds.accuracy) < 0.01

    both = ensemble([small_run, mlp_run])
    other = predict_run(mlp_run)
    np.testing.assert_allclose(both.probs, (preds.probs + other.probs) / 2, atol=1e-7)
    assert [m["accuracy"] for m in both.meta["members"]] == [preds.accuracy, other.accuracy]
    assert both.accuracy == float((both.probs.argmax(1) == preds.y).mean())


def test_cli_ensemble(small_run: Path, mlp_run: Path, tmp_path: Path) -> None:
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run
    from tests.helpers import run_cli

    r = run_cli("ensemble", str(small_run), str(mlp_run), "--tta", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 10000 and out["tta"] and len(out["members"]) == 2 and 0.9 < out["accuracy"] <= 1
    r = run_cli("ensemble", str(small_run), str(mlp_run))
    assert r.returncode == 0 and "ensemble of 2: test accuracy" in r.stdout
    fashion = tmp_path / "fashion"
    train_run(
        from_preset("fast", dataset="fashion_mnist", epochs=1, limit_train=500, limit_test=500), fashion, verbose=0
    )
    r = run_cli("ensemble", str(small_run), str(fashion))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "fashion_mnist" in r.stderr and "cannot join an ensemble of mnist" in r.stderr
