"""The bad-run suite: training, run folders and checkpoints a clumsy user or an attacker can reach.

Every refusal is one line on stderr with no traceback, a known exit code, and nothing on disk changed (the
folder around the run is hashed before and after, so a file left beside it counts too). Checkpoints are
edited for real: by hand in the file's JSON header (the digest must catch it), or re-written with a valid
digest around impossible content (the reader must still say no in one line). The lock and SIGTERM cases
use real second processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save as st_save

from mnistlab import checkpoint as ckpt
from mnistlab.errors import CheckpointError
from mnistlab.runs import lock_path
from tests.helpers import ROOT, run_cli, run_cli_forked

ARGS = ["--preset", "fast", "--limit-train", "600", "--limit-test", "200", "--batch-size", "100", "--val-split", "0",
        "--schedule", "constant", "--quiet"]  # fmt: skip


def tree_hash(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too) with a digest of its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert r.returncode == code, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def refused(where: Path, code: int, *args: str, needles: tuple[str, ...] = (), env: dict | None = None,
            cwd: Path | None = None) -> str:  # fmt: skip
    """Run ``mnistlab ARGS``; it must fail in one line and leave ``where`` exactly as it was."""
    before = tree_hash(where)
    r = run_cli(*args, env=env, cwd=cwd)
    one_line(r, code, *needles)
    assert tree_hash(where) == before
    return r.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    r = run_cli("train", *ARGS, "--epochs", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run(base: Path, tmp_path: Path) -> Path:
    """A copy of the finished one-epoch run, alone in a fresh folder."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


# -- item 7: the digest covers the JSON header -----------------------------------------------------


def edit_header(file: Path, old: str, new: str) -> None:
    """Edit the mnistlab metadata inside the safetensors header by hand, leaving the digest as it was."""
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]["mnistlab"]
    assert old in meta, old
    header["__metadata__"]["mnistlab"] = meta.replace(old, new, 1)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


HEADER_EDITS = {
    "class names 3 and 8 swapped": ('"3", "4", "5", "6", "7", "8"', '"8", "4", "5", "6", "7", "3"'),
    "epoch 1 -> 0": ('"epoch": 1, "epoch_done"', '"epoch": 0, "epoch_done"'),
    "learning rate": ('"lr": 0.03', '"lr": 0.031'),
    "version 2 -> 1": ('"version": 2', '"version": 1'),
}


@pytest.mark.parametrize("edit", list(HEADER_EDITS))
def test_a_hand_edited_header_is_caught(run: Path, edit: str) -> None:
    for name in (ckpt.LAST, ckpt.BEST):
        edit_header(run / name, *HEADER_EDITS[edit])
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        ckpt.read(run / ckpt.LAST)
    assert str(run / ckpt.LAST) in str(e.value)
    refused(run.parent, 2, "train", "--resume", str(run), "--epochs", "2", needles=(str(run / ckpt.LAST), "checksum"))
    refused(run.parent, 2, "evaluate", str(run), needles=(str(run / ckpt.BEST), "checksum"))


def test_the_header_edit_is_caught_even_where_the_tensors_are_untouched(run: Path) -> None:
    # The same file with its edit undone reads again: only the header changed, and the digest saw it.
    edit_header(run / ckpt.LAST, '"epoch": 1,', '"epoch": 0,')
    with pytest.raises(CheckpointError):
        ckpt.read(run / ckpt.LAST)
    edit_header(run / ckpt.LAST, '"epoch": 0,', '"epoch": 1,')
    assert ckpt.read(run / ckpt.LAST)[1]["epoch"] == 1


def test_version_1_checkpoints_still_read(run: Path) -> None:
    # Written before the digest covered the header: its digest is the tensors' alone, and it still loads.
    tensors, meta = ckpt.read(run / ckpt.BEST)
    header = {"format": ckpt.FORMAT, "version": 1, "sha256": ckpt.tensors_digest(tensors), "meta": meta}
    (run / ckpt.BEST).write_bytes(st_save(tensors, metadata={"mnistlab": json.dumps(header, sort_keys=True)}))
    assert ckpt.load_checkpoint(run).class_names == tuple("0123456789")
    r = run_cli("evaluate", str(run))
    assert r.returncode == 0, r.stderr


# -- valid digest, impossible content ---------------------------------------------------------------


def resign(run: Path, edit: Callable[[dict], None]) -> None:
    """Re-write both checkpoints with ``edit`` applied to their meta and a digest that fits it."""
    for name in (ckpt.LAST, ckpt.BEST):
        tensors, meta = ckpt.read(run / name)
        edit(meta)
        ckpt.save(run / name, tensors, meta)


SPEC_EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "hidden -5": (lambda m: m["model_spec"].update(hidden=-5), "hidden must be an integer"),
    "hidden 2e9": (lambda m: m["model_spec"].update(hidden=2_000_000_000), "hidden must be an integer"),
    "hidden 1.5": (lambda m: m["model_spec"].update(hidden=1.5), "hidden must be an integer"),
    "in_shape [1, 28]": (lambda m: m["model_spec"].update(in_shape=[1, 28]), "in_shape must be"),
    "in_shape huge": (lambda m: m["model_spec"].update(in_shape=[4096, 4096, 4096]), "too large"),
    "num_classes 0": (lambda m: m["model_spec"].update(num_classes=0), "num_classes must be"),
    "normalize std 0": (lambda m: m["model_spec"].update(normalize=[0.1, 0.0]), "normalize must be"),
    "spec a string": (lambda m: m.update(model_spec="mlp"), "no model spec inside"),
}


@pytest.mark.parametrize("edit", list(SPEC_EDITS))
def test_an_impossible_model_spec_is_one_line(run: Path, edit: str) -> None:
    change, msg = SPEC_EDITS[edit]
    resign(run, change)
    err = refused(run.parent, 2, "evaluate", str(run), needles=(msg,))
    assert str(run) in err


STATE_EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "epoch 'zero'": (lambda m: m.update(epoch="zero"), "field 'epoch' must be a non-negative int"),
    "epoch -1": (lambda m: m.update(epoch=-1), "field 'epoch' must be a non-negative int"),
    "step 1.5": (lambda m: m.update(step=1.5), "field 'step' must be"),
    "epoch_done 1": (lambda m: m.update(epoch_done=1), "field 'epoch_done' must be bool"),
    "no history": (lambda m: m.pop("history"), "no saved history"),
    "no generator state": (lambda m: m.pop("rng"), "no saved rng"),
    "history a list": (lambda m: m.update(history=[1, 2]), "field 'history' must be dict"),
    "history of another run": (lambda m: m.update(history={"epoch": [0, 1, 2]}), "history holds 3 epochs"),
    "empty rng": (lambda m: m.update(rng={}), "holds no saved state"),
}


@pytest.mark.parametrize("edit", list(STATE_EDITS))
def test_an_impossible_training_state_is_one_line(run: Path, edit: str) -> None:
    change, msg = STATE_EDITS[edit]
    resign(run, change)
    refused(run.parent, 2, "train", "--resume", str(run), "--epochs", "2", needles=(str(run / ckpt.LAST), msg))


# -- the output folder: a folder that is not a run, --force ----------------------------------------


USER_FILES = ("config.json", "metrics.csv", "summary.txt", "history.json", "result.json")


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in USER_FILES:
        (mine / name).write_text(f"my own {name}\n")
    refused(tmp_path, 2, "train", *ARGS, "--out", str(mine), needles=("not a mnistlab run", "--force"))


def test_a_folder_with_one_foreign_file_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    refused(tmp_path, 2, "train", *ARGS, "--out", str(mine), needles=("not a mnistlab run",))


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file\n")
    refused(tmp_path, 2, "train", *ARGS, "--out", str(tmp_path / "file"), needles=("is not a folder",))


def test_an_empty_folder_and_an_abandoned_run_are_used(run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert run_cli("train", *ARGS, "--epochs", "1", "--out", str(tmp_path / "empty")).returncode == 0
    abandoned = tmp_path / "abandoned"  # killed before its first checkpoint: only config.json and summary.txt
    abandoned.mkdir()
    for name in ("config.json", "summary.txt"):
        shutil.copy(run / name, abandoned / name)
    r = run_cli("train", *ARGS, "--epochs", "1", "--out", str(abandoned))
    assert r.returncode == 0, r.stderr
    assert (abandoned / ckpt.LAST).is_file()


def test_force_replaces_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}\n")
    r = run_cli("train", *ARGS, "--epochs", "1", "--out", str(mine), "--force")
    assert r.returncode == 0, r.stderr
    assert json.loads((mine / "config.json").read_text())["model"] == "mlp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--dataset", "/nonexistent"], "/nonexistent: no such file or folder"),
        (["--lr", "inf"], "learning rate must be a number"),
        (["--width", "-1"], "width must be ≥ 1"),
        (["--init-from", "/nonexistent"], "/nonexistent"),
    ],
)
def test_force_keeps_the_old_run_when_the_new_one_cannot_start(run: Path, extra: list[str], msg: str) -> None:
    refused(run.parent, 2, "train", *ARGS, "--out", str(run), "--force", *extra, needles=(msg,))


def test_force_cannot_replace_the_current_folder(run: Path) -> None:
    refused(run.parent, 2, "train", *ARGS, "--out", ".", "--force", needles=("holds the current folder",), cwd=run)


def test_force_keeps_the_old_run_when_training_fails_before_its_first_checkpoint(run: Path) -> None:
    # error-step:2 raises after step 2 of 6: the new run never wrote a checkpoint.
    env = {"MNISTLAB_FAULT": "error-step:2"}
    refused(run.parent, 2, "train", *ARGS, "--out", str(run), "--force", env=env, needles=("fault injected",))


def test_force_after_kill9_before_the_first_checkpoint_gets_the_old_run_back(run: Path) -> None:
    before = tree_hash(run.parent)
    r = run_cli_forked("train", *ARGS, "--epochs", "1", "--out", str(run), "--force", env={"MNISTLAB_FAULT": "step:2"})
    assert r.returncode == -signal.SIGKILL
    assert tree_hash(run.parent) != before  # the old run waits aside, hidden
    r = run_cli("train", "--resume", str(run))  # the next writer into the folder puts it back
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    assert tree_hash(run.parent) == before


def test_force_replaces_the_old_run_once_the_new_one_has_a_checkpoint(run: Path) -> None:
    old = (run / ckpt.LAST).read_bytes()
    r = run_cli("train", *ARGS, "--epochs", "2", "--out", str(run), "--force")
    assert r.returncode == 0, r.stderr
    assert (run / ckpt.LAST).read_bytes() != old and ckpt.read_meta(run / ckpt.LAST)["epoch"] == 2
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


# -- the lock ---------------------------------------------------------------------------------------


def test_a_second_writer_fails_at_once_naming_the_holder_and_sigterm_saves(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MNISTLAB_FAULT": ""}
    args = [*ARGS[:-1], "--epochs", "400", "--limit-train", "3000", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first epoch has begun: the lock is held and a checkpoint is coming
            if line.startswith("Epoch 2/"):
                break
        assert lock_path(out).read_text().split()[0] == str(proc.pid)
        t0 = time.perf_counter()
        for argv in (["train", *ARGS, "--out", str(out), "--force"], ["train", "--resume", str(out)]):
            r = run_cli(*argv)
            one_line(r, 2, f"in use by process {proc.pid} on {socket.gethostname()}", str(lock_path(out)))
        assert time.perf_counter() - t0 < 10  # at once, not after waiting for the holder
        proc.send_signal(signal.SIGTERM)  # a real SIGTERM from outside: save, say how to resume, exit 143
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    assert (
        err.count("\n") == 1
        and "interrupted by SIGTERM" in err
        and f"Resume with: mnistlab train --resume {out}" in err
    )
    assert not lock_path(out).exists()
    ckpt.read(out / ckpt.LAST)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_stale_lock_of_a_dead_process_is_taken_over(run: Path) -> None:
    lock = lock_path(run)
    lock.write_text(f"{dead_pid()} {socket.gethostname()}\n")
    r = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert not lock.exists() and ckpt.read_meta(run / ckpt.LAST)["epoch"] == 2


@pytest.mark.parametrize(
    ("content", "msg"),
    [("1 some-other-host\n", "in use by process 1 on some-other-host"), ("garbage", "in use by another process")],
)
def test_a_lock_that_cannot_be_judged_stale_is_respected(run: Path, content: str, msg: str) -> None:
    lock_path(run).write_text(content)
    refused(run.parent, 2, "train", "--resume", str(run), "--epochs", "2", needles=(msg,))
    refused(run.parent, 2, "train", *ARGS, "--out", str(run), "--force", needles=(msg,))


# -- settings and data that cannot train ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--width", "-1"], "width must be ≥ 1, got -1 (--width)"),
        (["--lr", "inf"], "learning rate must be a number, got inf (--lr)"),
        (["--lr", "nan"], "learning rate must be a number, got nan (--lr)"),
        (["--momentum", "nan"], "momentum must be a number, got nan (--momentum)"),
        (["--epochs", "1e9"], "epochs"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, extra: list[str], msg: str) -> None:
    refused(tmp_path, 2, "train", *ARGS, "--out", str(tmp_path / "x"), *extra, needles=(msg,))


def npz(path: Path, n_train: int, value: int = 0) -> Path:
    x = np.full((n_train, 28, 28), value, np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(n_train, dtype=np.uint8) % 10,
             x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10, dtype=np.uint8))  # fmt: skip
    return path


def test_an_empty_training_set_under_fast_is_one_clear_line(tmp_path: Path) -> None:
    data = npz(tmp_path / "empty.npz", 0)
    args = ["train", "--preset", "fast", "--val-split", "0", "--dataset", str(data), "--out", str(tmp_path / "x")]
    err = refused(tmp_path, 2, *args, needles=("no training images",))
    assert "Warning" not in err and "nan" not in err


def test_a_constant_training_set_under_fast_is_one_clear_line(tmp_path: Path) -> None:
    data = npz(tmp_path / "flat.npz", 20, value=7)
    args = ["train", "--preset", "fast", "--val-split", "0", "--dataset", str(data), "--out", str(tmp_path / "x")]
    refused(tmp_path, 2, *args, needles=("every training pixel has the value 7", "--no-normalize"))


# -- a bug is not a user mistake ----------------------------------------------------------------------


def test_a_bug_is_a_traceback_and_a_request_for_a_report(tmp_path: Path) -> None:
    r = run_cli("train", *ARGS, "--out", str(tmp_path / "x"), env={"MNISTLAB_FAULT": "bug-step:2"})
    assert r.returncode == 70
    assert "Traceback" in r.stderr and "RuntimeError: fault injected" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("mnistlab: this is a bug in mnistlab")
    assert "please report it" in r.stderr


def test_a_user_error_stays_one_line_beside_it(tmp_path: Path) -> None:
    r = run_cli("train", *ARGS, "--out", str(tmp_path / "x"), env={"MNISTLAB_FAULT": "error-step:2"})
    one_line(r, 2, "fault injected")


def test_the_folder_holds_nothing_after_the_refusals_but_what_was_there(run: Path) -> None:
    # The lock file is a sibling while a run writes, and gone afterwards, whatever the outcome.
    run_cli("train", *ARGS, "--out", str(run))
    run_cli("train", "--resume", str(run), "--epochs", "2")
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


# -- disk full and read-only, on a small tmpfs this test mounts ---------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int, bool], Path]]:
    """``mount(kib, read_only)``: a tmpfs of that size at a fresh folder, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(kib: int, read_only: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        opts = f"size={kib}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_a_new_run_on_a_full_disk_is_one_line_and_leaves_nothing(tmpfs: Callable[[int, bool], Path]) -> None:
    fs = tmpfs(600, False)  # room for config.json and summary.txt, not for a 1.2 MB checkpoint
    refused(fs, 2, "train", *ARGS, "--epochs", "1", "--out", str(fs / "new"),
            needles=(str(fs / "new"), "No space left on device"))  # fmt: skip


def test_force_on_a_full_disk_keeps_the_old_run(run: Path, tmpfs: Callable[[int, bool], Path]) -> None:
    fs = tmpfs(3000, False)  # the old run (2.5 MB) fits; a second checkpoint beside it does not
    shutil.copytree(run, fs / "run")
    refused(fs, 2, "train", *ARGS, "--epochs", "1", "--out", str(fs / "run"), "--force",
            needles=("No space left on device",))  # fmt: skip


def test_a_read_only_folder_is_one_line(run: Path, tmpfs: Callable[[int, bool], Path]) -> None:
    fs = tmpfs(100, True)
    refused(fs, 2, "train", *ARGS, "--out", str(fs / "new"), needles=("Read-only file system",))
