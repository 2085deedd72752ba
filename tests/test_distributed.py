"""Data-parallel training with real processes on loopback: torchrun, ``--nproc``, kill + resume, failures.

Two ranks train a 3000-image MNIST subset for 90 steps. What must hold: every rank ends with the same
weights; the metrics equal a single process's with the same global batch; a run killed in one rank
resumes bit for bit; one failing rank ends the whole run with its own message, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from mnistlab import checkpoint as ckpt
from mnistlab import distributed
from mnistlab.cli import main
from mnistlab.config import from_preset
from mnistlab.errors import ConfigError, DistributedError, MnistlabError
from mnistlab.runs import train_run
from tests.helpers import ROOT

# lr 1.5e-2: the single process trains with the hand-written MLP step and DDP through autograd; their gradients
# agree to 1e-6, and at this lr their 3-epoch trajectories agree to the printed digits, while at 1e-2 they drift
# apart by up to 4e-4 even in one process (measured: lean vs autograd alone), which would hide what
# this test is about: DDP's arithmetic. fp32: the preset's auto would take bf16 on a CPU with bf16 units, where
# the hand-written step and autocast round differently.
ARGS = ["--preset", "fast", "--limit-train", "3000", "--limit-test", "500", "--epochs", "3", "--batch-size", "100",
        "--val-split", "0", "--lr", "1.5e-2", "--precision", "fp32"]  # fmt: skip
TIMEOUT = 300  # seconds; a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Path:
    """The reference run: ``torchrun --nproc-per-node=2 -m mnistlab train``, exactly as a user types it."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MNISTLAB_HOME": str(session_home), "MNISTLAB_FAULT": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
           "-m", "mnistlab", "train", *ARGS, "--out", str(out), "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert r.returncode == 0, f"{r.stderr}\nstdout:\n{r.stdout}"
    assert r.stdout.count("test accuracy") == 1, r.stdout  # rank 0 alone prints
    return out


def model_and_optimizer(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.read(run / ckpt.LAST)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def test_every_rank_ends_with_the_same_weights(ddp_run: Path) -> None:
    for name in (ckpt.LAST, ckpt.BEST):
        tensors, meta = ckpt.read(ddp_run / name)
        # Each rank hashed its own model and optimizer state when the checkpoint was taken.
        digests = [r["digest"] for r in meta["ranks"]]
        state = {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}
        assert len(digests) == 2 and digests[0] == digests[1] == ckpt.tensors_digest(state)
        assert meta["fingerprint"]["world_size"] == 2
        assert {"rank1/rng/augment", "rank1/rng/torch", "rank1/train/sums"} <= tensors.keys()
    # Rank 0 wrote the run folder, nobody else wrote anything beside it.
    assert sorted(p.name for p in ddp_run.iterdir()) == sorted(
        ["config.json", "summary.txt", "metrics.csv", "history.json", "result.json", ckpt.LAST, ckpt.BEST]
    )
    assert json.loads((ddp_run / "result.json").read_text())["processes"] == 2


def test_metrics_equal_a_single_process_with_the_same_global_batch(ddp_run: Path, tmp_path: Path) -> None:
    config = from_preset(
        "fast", limit_train=3000, limit_test=500, epochs=3, batch_size=100, val_split=0, lr=1.5e-2, precision="fp32"
    )
    single = tmp_path / "single"
    train_run(config, single, verbose=0)
    one = json.loads((single / "history.json").read_text())["history"]
    two = json.loads((ddp_run / "history.json").read_text())["history"]
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=2e-4), key
    a, b = model_and_optimizer(single), model_and_optimizer(ddp_run)
    assert max(float((a[k] - b[k]).abs().max()) for k in a if k.startswith("model/")) < 1e-4
    # The model a DDP run leaves is a plain model: the one loader everyone uses rebuilds it.
    loaded = ckpt.load_checkpoint(ddp_run)
    assert loaded.config["batch_size"] == 100 and not loaded.model.training


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """A hang fails the test (the launcher then stops its processes) instead of stalling the suite."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"no result within {seconds}s: the run hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(capfd: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``mnistlab ARGS`` in this process; the launched ranks write to the same stderr, captured too."""
    with deadline(TIMEOUT):
        code = main(list(args))
    return code, capfd.readouterr().err


def test_kill_one_rank_mid_epoch_then_resume_is_bit_identical(
    ddp_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("MNISTLAB_FAULT", "step:45")  # rank 1 dies by SIGKILL after step 45 of 90
    monkeypatch.setenv("MNISTLAB_FAULT_RANK", "1")
    code, err = cli(capfd, "train", *ARGS, "--out", str(out), "--save-every", "10", "--quiet", "--nproc", "2")
    assert code == 128 + signal.SIGKILL, err
    assert err.splitlines() == [
        f"mnistlab: error: rank 1 of 2 failed: killed by SIGKILL; {out} keeps its last saved state. "
        f"Resume with: mnistlab train --resume {out} --nproc 2"
    ]
    tensors, meta = ckpt.read(out / ckpt.LAST)
    assert (meta["epoch"], meta["step"]) == (1, 40 - 30)  # saved at step 40: epoch 2, 10 steps in
    # Each rank took half of every global batch of 100: 10 steps × 50 images so far this epoch.
    assert float(tensors["train/sums"][2]) == float(tensors["rank1/train/sums"][2]) == 500
    monkeypatch.delenv("MNISTLAB_FAULT")
    code, err = cli(capfd, "train", "--resume", str(out), "--quiet", "--nproc", "2")
    assert code == 0, err
    a, b = model_and_optimizer(ddp_run), model_and_optimizer(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = (json.loads((p / "history.json").read_text()) for p in (ddp_run, out))
    assert ha["history"] == hb["history"] and hb["resumed_at"] == [1 + 10 / 30]
    assert (ddp_run / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_an_error_in_one_rank_ends_the_run_with_that_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("MNISTLAB_FAULT", "error-step:3")  # rank 1 raises; rank 0 waits for it in an all-reduce
    monkeypatch.setenv("MNISTLAB_FAULT_RANK", "1")
    code, err = cli(capfd, "train", *ARGS, "--epochs", "1", "--out", str(out), "--nproc", "2")
    assert code == 2
    assert err.splitlines() == ["mnistlab: error: rank 1 of 2 failed: fault injected by MNISTLAB_FAULT=error-step:3"]
    assert not (out / ckpt.LAST).exists()


# -- clear errors before anything starts ---------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    try:
        code = main(["train", *args])
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return code, err


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = one_line_error(
            capsys, *ARGS, "--out", str(tmp_path / "x"), "--nproc", "2", "--master-port", str(port)
        )
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err and "--master-port" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("env", "args", "msg"),
    [
        ({}, ["--nproc", "0"], "the number of processes must be an integer ≥ 1, got 0"),
        ({}, ["--nproc", "2", "--batch-size", "33"], "batch size 33 does not divide among 2 processes"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, [], "RANK must lie in 0..1 for WORLD_SIZE=2, got RANK=2"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, [], "WORLD_SIZE must be an integer, got 'two'"),
        ({"WORLD_SIZE": "0", "RANK": "0"}, [], "world size must be ≥ 1, got WORLD_SIZE=0"),
        ({"WORLD_SIZE": "2", "RANK": "1"}, [], "WORLD_SIZE=2 is set but MASTER_ADDR is not"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, ["--nproc", "2"],
         "already running as one of 2 processes (torchrun); leave out --nproc"),
    ],
)  # fmt: skip
def test_a_bad_world_size_is_a_clear_error(
    env: dict, args: list[str], msg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err = one_line_error(capsys, *ARGS, "--out", str(tmp_path / "x"), *args)
    assert code == 2 and msg in err
    assert not (tmp_path / "x").exists()
    assert distributed.current() is None


def test_a_run_resumes_only_as_many_processes_as_it_had(ddp_run: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = one_line_error(capsys, "--resume", str(ddp_run), "--epochs", "4")
    assert code == 2 and f"{ddp_run}: trained as 2 process(es), so it resumes only as 2 (asked: 1)" in err
    assert f"mnistlab train --resume {ddp_run} --nproc 2" in err


def test_per_rank_batch() -> None:
    assert distributed.per_rank_batch(256, 4) == 64 and distributed.per_rank_batch(7, 1) == 7
    with pytest.raises(ConfigError, match="use a multiple of 4, e.g. 100 or 104"):
        distributed.per_rank_batch(102, 4)


def test_the_launcher_names_the_rank_that_failed_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever rank the agent saw first, the report names the cause, not a rank that lost its partner."""

    def failure(rank: int, exitcode: int, exc: BaseException | None) -> ProcessFailure:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"  # a fresh error file for each
        if exc is not None:
            monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
            distributed.record_error(exc)
        return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(path))

    lost = distributed.PeerLostError("rank 0 of 2: lost contact with the other processes")
    e = ChildFailedError("mnistlab", {0: failure(0, 1, lost), 1: failure(1, 2, MnistlabError("disk full"))})
    err = distributed._root_cause(e, 2)
    assert str(err) == "rank 1 of 2 failed: disk full" and err.exit_code == 2

    e = ChildFailedError("mnistlab", {0: failure(0, -signal.SIGTERM, None), 1: failure(1, -signal.SIGKILL, None)})
    err = distributed._root_cause(e, 2)
    assert str(err) == "rank 1 of 2 failed: killed by SIGKILL" and err.exit_code == 137

    same = ConfigError("runs/x already holds a run")
    e = ChildFailedError("mnistlab", {0: failure(0, 2, same), 1: failure(1, 2, same)})
    assert str(distributed._root_cause(e, 2)) == "runs/x already holds a run"  # no rank: every rank says it


def test_a_single_process_joins_no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup() is None and distributed.is_main() and distributed.world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.setup() is None  # a world of one trains exactly as a plain process
    with pytest.raises(DistributedError, match="must be an integer ≥ 1"):
        distributed.check_nproc(-2)


# -- per-rank state: augmentation streams and batch-norm statistics -----------------------------------


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _fit_with_noise(run_dir: str, resume: bool) -> list[float]:
    """One rank of a library-level run: ``setup`` + ``Trainer.fit``, a batch-norm CNN, random augmentation."""
    from mnistlab.callbacks import ModelCheckpoint
    from mnistlab.datasets import mnist
    from mnistlab.engine import Trainer
    from mnistlab.models import cnn

    ctx = distributed.setup("cpu")
    try:
        (x, y), (xt, yt) = mnist.load_data()
        torch.manual_seed(0)
        trainer = Trainer(cnn(width=4), lr=3e-3, augment=_noise, augment_spec="noise", verbose=0, dist=ctx)
        last = Path(run_dir) / ckpt.LAST
        h = trainer.fit(x[:2000], y[:2000], batch_size=100, epochs=2, validation_data=(xt[:500], yt[:500]),
                        callbacks=[ModelCheckpoint(last, save_every=5)], resume_from=last if resume else None)  # fmt: skip
        return h.history["loss"]
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_kill_and_resume_with_augmentation_and_batch_norm_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    distributed.launch(2, _fit_with_noise, str(straight), False)
    monkeypatch.setenv("MNISTLAB_FAULT", "step:27")  # mid-epoch 2; the last save was at step 25
    monkeypatch.setenv("MNISTLAB_FAULT_RANK", "1")
    with pytest.raises(DistributedError, match="rank 1 of 2 failed: killed by SIGKILL"):
        distributed.launch(2, _fit_with_noise, str(killed), False)
    monkeypatch.delenv("MNISTLAB_FAULT")
    assert ckpt.read_meta(killed / ckpt.LAST)["global_step"] == 25
    distributed.launch(2, _fit_with_noise, str(killed), True)
    (a, _), (b, _) = ckpt.read(straight / ckpt.LAST), ckpt.read(killed / ckpt.LAST)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed run differs"
    assert not torch.equal(a["rng/augment"], a["rank1/rng/augment"])  # two streams, both restored exactly


def test_a_trainer_given_no_context_trains_alone_even_inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distributed context is an argument: a process that joined a run trains alone unless it passes it."""
    from mnistlab.datasets import mnist
    from mnistlab.engine import Trainer
    from mnistlab.models import mlp

    joined = distributed.Context(rank=1, world_size=2, local_rank=1, backend="gloo", device=torch.device("cpu"))
    monkeypatch.setattr(
        distributed, "_ctx", joined
    )  # as after setup() on rank 1 (no process group: any collective fails)
    (x, y), _ = mnist.load_data()
    trainer = Trainer(mlp(), verbose=0)
    h = trainer.fit(x[:500], y[:500], batch_size=100, epochs=1)
    assert trainer.dist is None and trainer.is_main and len(h.epoch) == 1
