"""Checkpoint and exact resume with real processes: kill -9 at several points, SIGINT, bad files.

Contract: N epochs straight == k epochs + kill -9 + resume, bit for bit (weights and history).
``MNISTLAB_FAULT`` (see ``mnistlab/faults.py``) makes the training process send itself a real SIGKILL or
SIGINT or SIGTERM at an exact point, including half-way through writing a checkpoint; one test also kills from outside.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnistlab import checkpoint as ckpt
from mnistlab.datasets import mnist
from mnistlab.errors import CheckpointError
from tests.helpers import ROOT, run_cli, run_cli_forked

ARGS = ["--preset", "fast", "--limit-train", "3000", "--limit-test", "500", "--epochs", "4", "--batch-size", "100",
        "--val-split", "0"]  # fmt: skip


# Every run here is a real process (it must be able to die by SIGKILL), forked from a server that has
# imported torch already, so each starts from the same fresh state without paying the import.
def train(out: Path, *extra: str, fault: str = "") -> subprocess.CompletedProcess:
    return run_cli_forked("train", *ARGS, "--out", str(out), "--quiet", *extra, env={"MNISTLAB_FAULT": fault})


def resume(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli_forked("train", "--resume", str(out), "--quiet", *extra, env={"MNISTLAB_FAULT": ""})


def state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = ckpt.read(out / ckpt.LAST)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}, meta


def assert_identical(a: Path, b: Path) -> None:
    ta, ma = state(a)
    tb, mb = state(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs"
    assert ma["history"]["history"] == mb["history"]["history"]
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    r = train(out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("step:45", []),  # mid-epoch 2, resumes from the end of epoch 1
        ("step:45", ["--save-every", "10"]),  # mid-epoch, resumes from step 40 inside epoch 2
        ("epoch:2", []),  # right after epoch 2 was saved
        ("save:3", []),  # half-way through writing best.safetensors of epoch 2
        ("save:4", []),  # half-way through writing last.safetensors of epoch 2
    ],
)
def test_kill9_then_resume_is_bit_identical(straight: Path, tmp_path: Path, fault: str, extra: list[str]) -> None:
    out = tmp_path / "run"
    r = train(out, *extra, fault=fault)
    assert r.returncode == -signal.SIGKILL, r.stderr
    ckpt.read(out / ckpt.LAST)  # the previous checkpoint is still whole and verified
    r = resume(out)
    assert r.returncode == 0, r.stderr
    assert not list(out.glob(".*.tmp"))
    assert_identical(straight, out)
    history = json.loads((out / "history.json").read_text())
    assert len(history["resumed_at"]) == 1


def test_external_kill9_then_resume(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MNISTLAB_FAULT": ""}
    cmd = [sys.executable, "-m", "mnistlab", "train", *ARGS, "--epochs", "4", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Epoch 3/4"):
            proc.kill()  # SIGKILL from outside, while epoch 3 runs
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert resume(out).returncode == 0
    assert_identical(straight, out)


def test_sigint_saves_exits_130_and_resumes(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = train(out, fault="sigint-step:50")
    assert r.returncode == 130
    assert f"Resume with: mnistlab train --resume {out}" in r.stderr and r.stderr.count("\n") == 1
    _, meta = state(out)
    assert (meta["epoch"], meta["step"]) == (1, 20)  # saved where it stopped: epoch 2, step 20
    assert resume(out).returncode == 0
    assert_identical(straight, out)


def test_sigterm_saves_exits_143_and_resumes(straight: Path, tmp_path: Path) -> None:
    # SIGTERM (what `kill`, systemd and batch schedulers send) ends training as Ctrl-C does.
    out = tmp_path / "run"
    r = train(out, fault="sigterm-step:50")
    assert r.returncode == 143
    assert "interrupted by SIGTERM at epoch 2 step 20/30" in r.stderr and r.stderr.count("\n") == 1
    assert f"Resume with: mnistlab train --resume {out}" in r.stderr
    _, meta = state(out)
    assert (meta["epoch"], meta["step"]) == (1, 20)
    assert resume(out).returncode == 0
    assert_identical(straight, out)


def test_an_injected_error_runs_in_this_process(tmp_path: Path) -> None:
    # Fault points read MNISTLAB_FAULT when asked, so a fault that needs no real kill needs no new process.
    out = tmp_path / "run"
    r = run_cli("train", *ARGS, "--out", str(out), "--quiet", env={"MNISTLAB_FAULT": "error-step:45"})
    assert (r.returncode, r.stderr) == (2, "mnistlab: error: fault injected by MNISTLAB_FAULT=error-step:45\n")
    _, meta = state(out)  # the save at the end of epoch 1 (step 30) is whole; step 45 never reached a save
    assert (meta["epoch"], meta["step"]) == (1, 0)
    r = run_cli("train", *ARGS, "--out", str(tmp_path / "other"), "--epochs", "1", "--quiet")
    assert r.returncode == 0, r.stderr  # the setting went with the command: the next run has no fault


def test_resuming_a_finished_run_does_nothing(straight: Path) -> None:
    before = (straight / ckpt.LAST).read_bytes()
    r = resume(straight)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert (straight / ckpt.LAST).read_bytes() == before


def test_best_is_never_replaced_by_a_worse_one_across_a_restart(tmp_path: Path) -> None:
    # With this seed and learning rate, validation accuracy peaks at epoch 3, then falls.
    out = tmp_path / "run"
    args = ["--preset", "lesson", "--limit-train", "3000", "--limit-test", "500", "--batch-size", "100", "--lr", "0.05",
            "--epochs", "5", "--out", str(out), "--quiet"]  # fmt: skip
    r = run_cli_forked("train", *args, env={"MNISTLAB_FAULT": "epoch:3"})
    assert r.returncode == -signal.SIGKILL
    best_before = (out / ckpt.BEST).read_bytes()
    assert ckpt.read_meta(out / ckpt.BEST)["history"]["best"]["epoch"] == 3
    assert resume(out).returncode == 0
    val = json.loads((out / "history.json").read_text())["history"]["val_sparse_categorical_accuracy"]
    assert max(val[3:]) < val[2], "precondition: epochs 4-5 are worse than epoch 3"
    assert (out / ckpt.BEST).read_bytes() == best_before
    assert json.loads((out / "history.json").read_text())["best"]["epoch"] == 3


def test_resume_with_other_settings_names_the_mismatch(straight: Path) -> None:
    r = resume(straight, "--model", "cnn")
    assert r.returncode == 2 and "cannot change model when resuming" in r.stderr
    r = resume(straight, "--epochs", "6")  # one-cycle was planned for 4 epochs
    assert r.returncode == 2 and "planned for 4 epochs" in r.stderr


def test_resume_with_changed_data_is_refused(tmp_path: Path) -> None:
    from mnistlab.datasets import idx
    from mnistlab.datasets.specs import PARTS

    (x, y), (xt, yt) = mnist.load_data()
    data = tmp_path / "data"
    data.mkdir()

    def write(offset: int) -> None:
        arrays = {
            "x_train": x[offset : offset + 1000],
            "y_train": y[offset : offset + 1000],
            "x_test": xt[:200],
            "y_test": yt[:200],
        }
        for key, part in PARTS.items():
            (data / part).write_bytes(idx.encode(arrays[key]))

    write(0)
    out = tmp_path / "run"
    r = run_cli_forked(
        "train",
        "--dataset",
        str(data),
        "--epochs",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--val-split",
        "0",
        env={"MNISTLAB_FAULT": "epoch:1"},
    )
    assert r.returncode == -signal.SIGKILL
    write(1000)
    r = resume(out)
    assert r.returncode == 2 and "cannot resume: the data set changed" in r.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip", "pickle", "foreign", "empty"])
def test_damaged_checkpoints_are_clear_errors(straight: Path, tmp_path: Path, damage: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", ckpt.LAST, ckpt.BEST):
        (run / name).write_bytes((straight / name).read_bytes())
    f = run / ckpt.LAST
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) - 1000])
    elif damage == "flip":
        f.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "pickle":
        torch.save({"model": torch.zeros(3)}, f)  # a pickle payload under our name
    elif damage == "foreign":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, f)
    else:
        f.write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        ckpt.read(f)
    assert str(f) in str(e.value)
    r = resume(run)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(f) in r.stderr and "Traceback" not in r.stderr
    r = run_cli("evaluate", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_load_checkpoint_rebuilds_the_model_alone(straight: Path) -> None:
    loaded = ckpt.load_checkpoint(straight)
    assert loaded.path.name == ckpt.BEST and loaded.class_names == tuple("0123456789")
    (_, _), (xt, yt) = mnist.load_data()
    p = loaded.predict(xt[:500])
    acc = float((p.argmax(1) == yt[:500]).mean())
    best = json.loads((straight / "history.json").read_text())["best"]
    assert acc == pytest.approx(best["value"], abs=1e-6)
    assert not loaded.model.training


def test_init_from_is_a_warm_start(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "warm"
    r = run_cli("train", *ARGS, "--epochs", "1", "--lr", "1e-4", "--schedule", "constant", "--init-from", str(straight),
                "--out", str(out), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    warm = json.loads((out / "history.json").read_text())["history"]["val_sparse_categorical_accuracy"][0]
    cold = json.loads((straight / "history.json").read_text())["history"]["val_sparse_categorical_accuracy"][0]
    assert warm > cold  # starts from trained weights: better after one epoch than a cold start
    assert len(json.loads((out / "history.json").read_text())["epoch"]) == 1
    r = run_cli("train", *ARGS, "--model", "cnn", "--init-from", str(straight), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "do not fit" in r.stderr


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cnn_channels_last_resume_is_bit_identical(tmp_path: Path, precision: str) -> None:
    # Batch norm, bf16 autocast and channels_last weights: restored optimizer state must take the
    # parameters' memory layout, or the resumed run drifts.
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    def config(epochs: int):
        return from_preset("best", width=8, epochs=epochs, limit_train=1000, limit_test=200, batch_size=50,
                           schedule="constant", augment="", precision=precision, channels_last=True)  # fmt: skip

    train_run(config(2), tmp_path / "a", verbose=0)
    train_run(config(1), tmp_path / "b", verbose=0)
    train_run(None, tmp_path / "b", resume=True, overrides={"epochs": 2}, verbose=0)
    assert_identical(tmp_path / "a", tmp_path / "b")


def test_cli_kill9_with_early_stopping_and_plateau_resumes_bit_identical(tmp_path: Path) -> None:
    # The run folder's own callbacks, from the CLI: their state rides in every checkpoint.
    flags = ["--early-stopping", "2", "--reduce-lr-on-plateau", "1", "--monitor", "val_loss", "--schedule", "constant"]
    a, b = tmp_path / "straight", tmp_path / "killed"
    assert train(a, *flags).returncode == 0
    r = train(b, *flags, "--save-every", "10", fault="step:75")  # mid-epoch 3, last saved at step 70
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert resume(b).returncode == 0
    assert_identical(a, b)
    ma, mb = ckpt.read_meta(a / ckpt.LAST), ckpt.read_meta(b / ckpt.LAST)
    assert set(ma["callbacks"]) == {"EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"}
    assert ma["callbacks"] == mb["callbacks"] and ma["lr_factor"] == mb["lr_factor"]
