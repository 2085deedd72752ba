"""Plots of a real run: curves, confusion matrix, mistakes, per-class accuracy; library and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab import plots
from mnistlab.analysis import Predictions, load_history, predict_run
from mnistlab.cli import main
from mnistlab.errors import ConfigError
from tests.helpers import run_cli


def assert_picture(path: Path, min_size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A real PNG of sensible size with drawn content (not one flat colour); returns its gray pixels."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_size[0] and im.height >= min_size[1], im.size
        gray = np.asarray(im.convert("L"), dtype=np.float64)
    assert gray.std() > 10, "the picture is (nearly) blank"
    assert (gray < 128).mean() > 0.005, "hardly anything dark is drawn"
    return gray


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


@pytest.fixture(scope="module")
def preds(small_run: Path) -> Predictions:
    return predict_run(small_run)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Path:
    """1 epoch, then resumed to 3 (a constant schedule allows raising the epoch total)."""
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "resumed"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_HOME", str(session_home))
        train_run(from_preset("fast", schedule="constant", epochs=1, limit_train=2000, limit_test=2000), out, verbose=0)
        train_run(None, out, resume=True, overrides={"epochs": 3}, verbose=0)
    return out


# -- history --------------------------------------------------------------------------------------


def test_curves_of_a_run_are_the_lessons_two_panels(small_run: Path, tmp_path: Path) -> None:
    h = json.loads((small_run / "history.json").read_text())
    fig = plots.plot_history(small_run)
    acc_ax, loss_ax = fig.axes
    assert acc_ax.get_title() == "Training and Validation Accuracy"
    assert loss_ax.get_title() == "Training and Validation Loss"
    lines = {ln.get_label(): ln for ln in acc_ax.get_lines() + loss_ax.get_lines()}
    assert list(lines["Training Accuracy"].get_xdata()) == [1, 2]  # epochs are 1-based
    assert list(lines["Validation Loss"].get_ydata()) == h["history"]["val_loss"]
    # The best epoch: a dotted line on both panels and a star on the monitored validation accuracy.
    best = h["best"]
    assert lines[f"best: epoch {best['epoch']}"].get_xdata()[0] == best["epoch"]
    stars = [ln for ln in acc_ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_ydata()[0] == best["value"]
    assert not [ln for ln in loss_ax.get_lines() if ln.get_marker() == "*"]
    assert_picture(plots.save_figure(fig, tmp_path / "curves.png"), (800, 300))


def test_a_resume_is_marked_where_it_happened(resumed_run: Path) -> None:
    h = load_history(resumed_run)
    assert h.resumed_at == [1.0] and len(h.epoch) == 3
    fig = plots.plot_history(resumed_run)
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if ln.get_label() == "resumed at 1"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [1.0, 1.0]


def test_confusion_figure_has_counts_and_normalised_panels(preds: Predictions, tmp_path: Path) -> None:
    fig = plots.plot_confusion(preds)
    counts, norm = image_axes(fig)
    np.testing.assert_array_equal(counts.images[0].get_array(), preds.confusion())
    np.testing.assert_allclose(norm.images[0].get_array().sum(1), np.ones(10))
    assert len(counts.texts) == np.count_nonzero(preds.confusion())  # a number in every non-empty cell
    assert [t.get_text() for t in counts.get_xticklabels()] == list(preds.class_names)
    assert_picture(plots.save_figure(fig, tmp_path / "confusion.png"), (800, 400))


def test_mistakes_grid_shows_image_true_predicted_probability(preds: Predictions, tmp_path: Path) -> None:
    fig = plots.plot_mistakes(preds, n=10, cols=5)
    cells = image_axes(fig)
    assert len(cells) == 10
    i = preds.mistakes(1)[0]
    p = preds.pred[i]
    title = cells[0].get_title()
    assert title.startswith(f"#{i} true: {preds.class_names[preds.y[i]]}\npred: {preds.class_names[p]} ")
    assert title.endswith("%") and float(title.split()[-1][:-1]) <= preds.probs[i, p] * 100
    np.testing.assert_array_equal(cells[0].images[0].get_array(), preds.x[i])
    assert_picture(plots.save_figure(fig, tmp_path / "mistakes.png"), (500, 250))


def test_no_mistakes_says_so() -> None:
    y = np.array([0, 1, 2])
    perfect = Predictions(np.zeros((3, 28, 28), np.uint8), y, np.eye(3), ("a", "b", "c"))
    fig = plots.plot_mistakes(perfect, n=5)
    assert not image_axes(fig) and "No mistakes on the 3 test images" in fig.texts[0].get_text()


def test_per_class_bars_match_per_class_accuracy(preds: Predictions, tmp_path: Path) -> None:
    fig = plots.plot_per_class(preds)
    (ax,) = fig.axes
    heights = [b.get_height() for b in ax.patches]
    np.testing.assert_allclose(heights, preds.per_class_accuracy())
    worst = int(np.argmin(heights))
    assert ax.patches[worst].get_facecolor() != ax.patches[(worst + 1) % 10].get_facecolor()
    assert_picture(plots.save_figure(fig, tmp_path / "per_class.png"), (500, 250))


def test_image_grid_draws_one_cell_per_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray, rgb = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.random((3, 32, 32, 3))
    assert len(image_axes(plots.image_grid(gray, [str(i) for i in range(7)], cols=4))) == 7
    assert len(image_axes(plots.image_grid(rgb, cols=4))) == 3
    assert_picture(plots.image_grid(gray, path=tmp_path / "g.png", cols=4), (200, 100))


def test_output_names_are_checked() -> None:
    fig = plots.new_figure((2, 2))
    with pytest.raises(ConfigError, match="cannot write a .gif picture"):
        plots.save_figure(fig, "x.gif")
    with pytest.raises(ConfigError, match="is a folder"):
        plots.save_figure(fig, Path.cwd())


def test_svg_and_pdf_follow_the_suffix(small_run: Path, tmp_path: Path) -> None:
    assert plots.plot_history(small_run, tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert plots.plot_history(small_run, tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")


# -- the command ----------------------------------------------------------------------------------


def test_cli_plot_writes_curves_by_default(small_run: Path, tmp_path: Path) -> None:
    r = run_cli("plot", str(small_run), "--show", cwd=tmp_path, env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote curves.png"
    assert "no window could open" in r.stderr  # --show without a display: the file, and a note, no failure
    assert_picture(tmp_path / "curves.png", (800, 300))


def test_cli_plot_confusion_mistakes_per_class(small_run: Path, tmp_path: Path) -> None:
    r = run_cli("plot", str(small_run), "--confusion", "--mistakes", "16", "--per-class", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["wrote", "confusion.png", "wrote", "mistakes.png", "wrote", "per_class.png"]
    for name in ("confusion.png", "mistakes.png", "per_class.png"):
        assert_picture(tmp_path / name)
    assert not (tmp_path / "curves.png").exists()


def test_cli_plot_bad_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = run_cli("plot", "empty", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr
        == "mnistlab: error: empty: not a run folder (no config.json, history.json, metrics.csv or checkpoint inside)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written, not even a temp file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{fresh}", "--confusion"], "no finished epoch yet"),
        (["{run}", "--confusion", "--per-class", "-o", "x.png"], "-o names one file but 2 figures were asked"),
        (["{run}", "-o", "x.gif"], "cannot write a .gif picture"),
        (["{run}", "--mistakes", "-1"], "number of mistakes to show must be ≥ 1, got -1"),
        (["{run}", "--which", "last", "-o", "{run}"], "is a folder"),
    ],
)
def test_cli_plot_bad_input_in_process(
    small_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    before = sorted(p.name for p in small_run.iterdir())
    assert main(["plot", *[a.format(fresh=tmp_path / "fresh", run=small_run) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnistlab: error: ") and message in err
    assert list(out.iterdir()) == [] and sorted(p.name for p in small_run.iterdir()) == before


def test_loss_panel_says_when_label_smoothing_is_on(small_run) -> None:
    # The fast preset trains with label smoothing 0.1: its training loss sits far above the validation loss.
    notes = [t.get_text() for t in plots.plot_history(small_run).axes[1].texts]
    assert notes == ["training loss includes label smoothing 0.1; validation loss does not"]
    assert not plots.plot_history({"loss": [0.5, 0.3], "val_loss": [0.4, 0.35]}).axes[1].texts
