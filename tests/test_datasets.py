"""The data layer against the real files: Keras shapes and dtypes, the published facts, verification."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mnistlab.datasets import fashion_mnist, idx, load, mnist
from mnistlab.datasets.specs import FASHION_MNIST, MNIST, PARTS
from mnistlab.datasets.store import EMBEDDED_DIR, describe_locations
from mnistlab.errors import DatasetError
from tests.helpers import shared_dataset

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
ROW5 = [0] * 12 + [3, 18, 18, 18, 126, 136, 175, 26, 166, 255, 247, 127, 0, 0, 0, 0]


def test_mnist_load_data_matches_keras_and_published_facts() -> None:
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert y_train[0] == 5
    assert x_train[0][5].tolist() == ROW5
    assert mnist.class_names == tuple("0123456789")


def test_fashion_mnist_has_balanced_classes_and_names() -> None:
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(path=shared_dataset("fashion-mnist"))
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert fashion_mnist.class_names[0] == "T-shirt/top" and fashion_mnist.class_names[9] == "Ankle boot"


def test_embedded_files_are_the_canonical_content() -> None:
    for part, md5 in MNIST.md5.items():
        assert idx.md5(idx.read_bytes(EMBEDDED_DIR / "mnist" / f"{part}.gz")) == md5


def test_warm_load_is_memory_mapped_and_equal(home: Path) -> None:
    cold = load("mnist")
    t = time.perf_counter()
    warm = load("mnist")
    elapsed = time.perf_counter() - t
    assert isinstance(warm.x_train, np.memmap)
    assert np.array_equal(cold.x_train, warm.x_train) and np.array_equal(cold.y_test, warm.y_test)
    assert cold.digest == warm.digest
    assert elapsed < 5  # a sanity bound only; the real target is in benchmarks/
    # Copy-on-write: users may modify arrays in place without touching the cache.
    warm.x_train[0, 0, 0] = 255
    assert load("mnist").x_train[0, 0, 0] == 0


def test_raw_idx_folder_and_explicit_path_win(tmp_path: Path) -> None:
    src = shared_dataset("mnist")
    for part in PARTS.values():
        (tmp_path / part).write_bytes(gzip.decompress((src / f"{part}.gz").read_bytes()))
    ds = load("mnist", path=tmp_path)
    assert ds.source == f"path:{tmp_path}"
    assert ds.x_train.shape == (60000, 28, 28)


def test_hand_placed_bad_file_is_reported_and_kept(home: Path) -> None:
    folder = home / "mnist"
    shutil.copytree(shared_dataset("mnist"), folder)
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(bad.read_bytes()))
    data[100] = (data[100] + 1) % 10
    bad.write_bytes(gzip.compress(bytes(data)))
    before = bad.read_bytes()
    with pytest.raises(DatasetError) as e:
        load("mnist")
    msg = str(e.value)
    assert str(bad) in msg and MNIST.md5["t10k-labels-idx1-ubyte"] in msg and "untouched" in msg
    assert "\n" not in msg
    assert bad.read_bytes() == before  # never deleted or overwritten


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "wrong magic"),
        (lambda b: b[:2], "not an IDX file"),
    ],
)
def test_idx_parse_errors(mangle, expected: str) -> None:
    raw = gzip.decompress((shared_dataset("mnist") / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DatasetError, match=expected):
        idx.parse(mangle(raw), "x.idx", 3)


def test_corrupt_gzip_is_a_dataset_error(tmp_path: Path) -> None:
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    good = (shared_dataset("mnist") / f.name).read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        idx.read_bytes(f)


def _write_idx(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, part in PARTS.items():
        (folder / f"{part}.gz").write_bytes(gzip.compress(idx.encode(arrays[key])))


def test_small_custom_idx_folder_and_count_mismatch(tmp_path: Path) -> None:
    (x, y), (xt, yt) = mnist.load_data()
    _write_idx(tmp_path, {"x_train": x[:100], "y_train": y[:100], "x_test": xt[:50], "y_test": yt[:50]})
    ds = load(tmp_path)
    assert ds.name == tmp_path.name and ds.x_train.shape == (100, 28, 28) and ds.num_classes == 10
    _write_idx(tmp_path, {"x_train": x[:100], "y_train": y[:100], "x_test": xt[:50], "y_test": yt[:49]})
    with pytest.raises(DatasetError, match="50 test images but 49 test labels"):
        load(tmp_path)


def test_known_set_with_a_changed_label_fails_its_digest(tmp_path: Path) -> None:
    src = shared_dataset("mnist")
    for part in PARTS.values():
        shutil.copy(src / f"{part}.gz", tmp_path)
    labels = idx.parse(idx.read_bytes(tmp_path / "t10k-labels-idx1-ubyte.gz"), "l", 1).copy()
    labels[0] = 12
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx.encode(labels)))
    with pytest.raises(DatasetError, match="does not match the canonical"):
        load("mnist", path=tmp_path)


def test_load_by_path_recognises_known_content() -> None:
    ds = load(shared_dataset("fashion-mnist"))
    assert ds.name == "fashion_mnist" and ds.class_names == FASHION_MNIST.class_names


def test_keras_npz_loads(tmp_path: Path) -> None:
    (x, y), (xt, yt) = mnist.load_data()
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (a, b), (c, d) = mnist.load_data(path=tmp_path / "mnist.npz")
    assert np.array_equal(a, x) and np.array_equal(d, yt)


def test_not_a_dataset_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a data set"):
        load(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        load(tmp_path / "nope")


def test_locations_order(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(tmp_path / "sys"))
    rows = describe_locations(MNIST, str(tmp_path / "explicit"))
    assert [r["kind"] for r in rows] == ["path", "home", "system", "embedded", "download"]
    assert rows[3]["state"] == "present (used)"
