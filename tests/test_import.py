"""`mnistlab data import`: Keras npz, gz folder, raw IDX folder; corrupt input never touches the data home."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnistlab.datasets import fashion_mnist, import_dataset, load
from mnistlab.datasets.specs import PARTS
from mnistlab.errors import DatasetError
from tests.helpers import run_cli


@pytest.fixture
def no_system(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(tmp_path / "no-system"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return (
        {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.exists()
        else {}
    )


def test_import_keras_npz(fashion_dir: Path, home: Path, tmp_path: Path, no_system) -> None:
    (x, y), (xt, yt) = fashion_mnist.load_data(path=fashion_dir)
    npz = tmp_path / "fashion-mnist.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    dest = import_dataset("fashion_mnist", npz)
    assert dest == home / "fashion_mnist"
    ds = load("fashion_mnist", download=False)
    assert ds.source.startswith("home:") and np.array_equal(ds.x_test, xt)


def test_import_gz_folder_and_raw_folder(fashion_dir: Path, home: Path, tmp_path: Path, no_system) -> None:
    import_dataset("fashion_mnist", fashion_dir)
    raw = tmp_path / "raw"
    raw.mkdir()
    for part in PARTS.values():
        (raw / part).write_bytes(gzip.decompress((fashion_dir / f"{part}.gz").read_bytes()))
    import_dataset("fashion_mnist", raw)  # same content again: replaces in place, no backup needed
    files = sorted(p.name for p in (home / "fashion_mnist").iterdir())
    assert files == sorted(f"{p}.gz" for p in PARTS.values())
    assert load("fashion_mnist", download=False).x_train.shape == (60000, 28, 28)


def test_corrupt_import_is_rejected_without_touching_the_home(
    fashion_dir: Path, home: Path, tmp_path: Path, no_system
) -> None:
    import_dataset("fashion_mnist", fashion_dir)
    (x, y), (xt, yt) = fashion_mnist.load_data(path=fashion_dir)
    before = _snapshot(home / "fashion_mnist")
    bad = tmp_path / "bad"
    shutil.copytree(fashion_dir, bad)
    data = bytearray(gzip.decompress((bad / "t10k-images-idx3-ubyte.gz").read_bytes()))
    data[5000] ^= 0xFF
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DatasetError, match="x_test has content MD5"):
        import_dataset("fashion_mnist", bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=x, y_train=y, x_test=xt)
    with pytest.raises(DatasetError, match="missing arrays y_test"):
        import_dataset("fashion_mnist", wrong)
    assert _snapshot(home / "fashion_mnist") == before


def test_import_keeps_a_differing_hand_placed_file(fashion_dir: Path, home: Path, no_system) -> None:
    folder = home / "fashion_mnist"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not really")
    import_dataset("fashion_mnist", fashion_dir)
    kept = [p for p in folder.iterdir() if ".replaced-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"not really"


def test_cli_import_errors_are_one_line(home: Path, tmp_path: Path) -> None:
    r = run_cli("data", "import", "fashion_mnist", str(tmp_path), env={"MNISTLAB_HOME": str(home)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert str(tmp_path) in r.stderr
    assert not home.exists() or not any(home.rglob("*.gz"))
