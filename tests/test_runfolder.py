"""RunFolder: every command reads a run one way; `mnistlab runs` lists runs and overlays their curves."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab import checkpoint as ckpt
from mnistlab.analysis import load_history, predict_run
from mnistlab.config import TrainConfig
from mnistlab.errors import CheckpointError
from mnistlab.metrics import ACC
from mnistlab.runfolder import RUN_FILES, RunFolder, find_runs, runs_table
from tests.conftest import run_cli

NO_CONFIG = "no run config (in the checkpoint or config.json), so its data set is unknown"


def test_run_folder_reads_what_the_run_wrote(small_run: Path) -> None:
    run = RunFolder(small_run)
    assert run.config() == TrainConfig.read(small_run / "config.json") == run.saved_config()
    assert run.config().limit_train == 5000 and run.checkpoint("last") == small_run / ckpt.LAST
    assert len(run.history().epoch) == 2 and run.history().best["epoch"] in (1, 2)
    assert run.result()["epochs"] == 2  # type: ignore[index]
    assert run.result()["validated_on"] == run.config().validated_on == "the last 5000 training images"  # type: ignore[index]
    assert "Total params" in (run.summary_text() or "")
    assert run.load() is run.load()  # one read, whoever asks
    assert run.test_accuracy() == run.result()["test"][ACC]  # type: ignore[index]
    assert set(RUN_FILES) >= {p.name for p in small_run.iterdir()} - {"weights.npz", "model.onnx"}


def test_evaluate_says_what_chose_the_checkpoint(small_run: Path) -> None:
    ev = RunFolder(small_run).evaluate()
    epoch = RunFolder(small_run).history().best["epoch"]
    on = TrainConfig.read(small_run).validated_on
    assert ev["chosen_by"] == f"best val_sparse_categorical_accuracy on {on} (epoch {epoch})"
    assert ev["n"] == 10_000 and ev["dataset"] == "mnist"
    assert RunFolder(small_run).evaluate("last")["chosen_by"] == "the last saved state"
    r = run_cli("evaluate", str(small_run))
    assert r.returncode == 0 and f"chosen by best val_sparse_categorical_accuracy on {on}" in r.stdout.splitlines()[0]


@pytest.fixture(scope="module")
def configless(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a real run whose checkpoint carries no config and that has no config.json."""
    out = tmp_path_factory.mktemp("configless") / "run"
    shutil.copytree(small_run, out)
    (out / "config.json").unlink()
    for name in (ckpt.BEST, ckpt.LAST):
        tensors, meta = ckpt.read(out / name)
        meta.pop("config")
        ckpt.save(out / name, tensors, meta)
    return out


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "{run}"],
        ["plot", "{run}", "--confusion", "-o", "{tmp}/c.png"],
        ["report", "{run}", "-o", "{tmp}/r.html"],
    ],
    ids=["evaluate", "plot", "report"],
)
def test_a_missing_config_is_the_same_one_line_error_everywhere(configless: Path, argv: list[str], tmp_path: Path):
    r = run_cli(*[a.format(run=configless, tmp=tmp_path) for a in argv])
    assert (r.returncode, r.stderr) == (2, f"mnistlab: error: {configless}: {NO_CONFIG}\n")
    assert not list(tmp_path.iterdir())


def test_a_missing_config_skips_only_the_export_parity_check_and_says_why(configless: Path, tmp_path: Path) -> None:
    r = run_cli("export", str(configless), "--format", "npz", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"parity check skipped: {configless}: {NO_CONFIG}" in r.stdout
    # Predict and serve need no data set: the model and its classes come from the checkpoint alone.
    one = np.zeros((28, 28), np.uint8)
    one[5:23, 13:16] = 255  # a "1"
    Image.fromarray(one).save(tmp_path / "one.png")
    r = run_cli("predict", str(configless), str(tmp_path / "one.png"))
    assert r.returncode == 0, r.stderr
    with pytest.raises(CheckpointError, match=re.escape(NO_CONFIG)):
        predict_run(configless)
    # Scoring on a named data set needs no run config.
    assert RunFolder(configless).evaluate(dataset="mnist")["n"] == 10_000


def test_a_checkpoint_file_alone_is_a_run_too(small_run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "model.safetensors"
    shutil.copyfile(small_run / ckpt.BEST, lone)
    run = RunFolder(lone)
    assert run.checkpoint("last") == lone and run.result() is None
    assert run.config() == RunFolder(small_run).config()
    assert load_history(lone).epoch == load_history(small_run / ckpt.BEST).epoch
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint file"):
        RunFolder(tmp_path / "missing")


def test_runs_lists_every_run_with_its_numbers(small_run: Path, mlp_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for src in (small_run, mlp_run):
        shutil.copytree(src, root / src.name)
    (root / "started").mkdir()
    (root / "started" / "config.json").write_text(json.dumps(TrainConfig(model="cnn").to_dict()))
    (root / "not-a-run").mkdir()
    shutil.copytree(small_run, root / ".small.replaced-123")  # an old run that --force has set aside
    assert [r.name for r in find_runs(root)] == ["mlp", "small", "started"]
    r = run_cli("runs", str(root))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "model", "data", "set"] and len(lines) == 4
    small = RunFolder(root / "small").row()
    row = next(line for line in lines if line.startswith(str(root / "small")))
    assert f"{small['test_accuracy']:.4f}" in row and f"{small['best_val']:.4f} ({small['best_epoch']})" in row
    assert " 2/2 " in row and " mlp " in row and " mnist " in row and f"{small['train_time_s']:.1f}s" in row
    assert small["test_accuracy"] == json.loads((small_run / "result.json").read_text())["test"][ACC]
    started = next(line for line in lines if line.startswith(str(root / "started")))
    assert " cnn " in started and " 0/5 " in started
    (tmp_path / "empty").mkdir()
    assert runs_table(tmp_path / "empty") == f"no runs in {tmp_path / 'empty'}"
    r = run_cli("runs", str(tmp_path / "nowhere"))
    assert (r.returncode, r.stderr) == (2, f"mnistlab: error: {tmp_path / 'nowhere'}: no such folder\n")


def test_runs_compare_overlays_the_curves(small_run: Path, mlp_run: Path, tmp_path: Path) -> None:
    from mnistlab.plots import plot_compare

    fig = plot_compare([small_run, mlp_run])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]  # type: ignore[union-attr]
    assert labels == ["small validation", "small training", "mlp validation", "mlp training"]
    val = fig.axes[0].get_lines()[0].get_ydata()  # type: ignore[union-attr]
    np.testing.assert_allclose(val, load_history(small_run).history[f"val_{ACC}"])
    out = tmp_path / "cmp.png"
    r = run_cli("runs", "--compare", str(small_run), str(mlp_run), "-o", str(out))
    assert r.returncode == 0 and r.stdout == f"wrote {out}\n", r.stderr
    assert Image.open(out).size[0] > 500
    r = run_cli("runs", "--compare", str(small_run), str(tmp_path / "nothing"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "no such run folder" in r.stderr and not (tmp_path / "x.png").exists()
