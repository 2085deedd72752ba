"""The bad-input suite: every case is one line on stderr (or one JSON error), an exit code or HTTP status,
and nothing on disk changed (each watched folder hashed before and after).

CLI cases run in-process through ``mnistlab.cli.main``; the web cases against a real ``mnistlab serve``
subprocess; disk-full and read-only cases on a small tmpfs this test mounts (skipped where it cannot).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.datasets import download as dl
from mnistlab.datasets.specs import MNIST as MNIST_SPEC
from mnistlab.datasets.specs import PARTS
from tests.helpers import http_server, serve_process, shared_dataset

MNIST = shared_dataset("mnist")
FASHION = shared_dataset("fashion-mnist")


# -- helpers ------------------------------------------------------------------------------------------


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a digest of its content (folders: '<dir>')."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {folder.name: hashlib.sha256(folder.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<other>"
    return out


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def arrays(n: int = 20, labels: np.ndarray | None = None, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if x is None else x
    y = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels
    return {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": (np.arange(10) % 10).astype(np.uint8)}


def npz(path: Path, **kw) -> Path:
    np.savez(path, **arrays(**kw))
    return path


def idx_folder(path: Path, y_train: np.ndarray, n: int = 20) -> Path:
    from mnistlab.datasets import idx

    path.mkdir(parents=True)
    a = arrays(n, labels=y_train)
    for key, part in PARTS.items():
        (path / part).write_bytes(idx.encode(a[key]))
    return path


def foreign_png(path: Path) -> Path:
    """A picture of the user's: a PNG that mnistlab did not write."""
    Image.new("L", (28, 28), 128).save(path)
    return path


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system holding ``folder`` to the last byte."""
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def home_with_a_bad_file(home: Path) -> None:
    """A data home holding good copies of MNIST, except a wrong t10k-labels (so an import must write it)."""
    dest = home / "mnist"
    dest.mkdir(parents=True)
    for part in PARTS.values():
        shutil.copy(MNIST / f"{part}.gz", dest / f"{part}.gz")
    shutil.copy(FASHION / "t10k-labels-idx1-ubyte.gz", dest / "t10k-labels-idx1-ubyte.gz")


class Mirror(http.server.BaseHTTPRequestHandler):
    """/huge/F streams zeros announced as 1000 MiB, /endless/F the same unannounced, /bomb/F is a 1 MB gzip promising 784 MB,
    /good/F serves the real MNIST files."""

    def do_GET(self) -> None:  # noqa: N802
        kind, _, name = self.path.strip("/").partition("/")
        if kind in ("huge", "endless"):
            self.send_response(200)
            if kind == "huge":
                self.send_header("Content-Length", str(1000 << 20))
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(16000):
                    self.wfile.write(b"\0" * 65536)
            return
        if kind == "bomb":
            body = _bomb()
        elif kind == "good" and (MNIST / name).is_file():
            body = (MNIST / name).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@functools.cache
def _bomb() -> bytes:
    head = struct.pack(">HBB3I", 0, 8, 3, 1_000_000, 28, 28)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(head)
        for _ in range(784):
            g.write(b"\0" * 1_000_000)
    return buf.getvalue()


CAP = dl.max_download(dl.expected_size(MNIST_SPEC, PARTS["x_train"]))


@pytest.fixture(scope="module")
def mirror() -> Iterator[str]:
    with http_server(Mirror) as url:
        yield url


# -- the CLI table ------------------------------------------------------------------------------------


@dataclass
class Case:
    argv: list[str]
    code: int
    fragment: str
    watch: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Ctx:
    tmp: Path
    home: Path
    run: Callable[[], Path]
    mirror: Callable[[], str]
    mount: Callable[[Path, str], Path]
    used_run: list[Path] = field(default_factory=list)


def _truncated_npz(c: Ctx) -> Path:
    p = npz(c.tmp / "t.npz")
    p.write_bytes(p.read_bytes()[:300])
    return p


def _half_npz(c: Ctx) -> Path:
    p = npz(c.tmp / "t.npz")
    data = bytearray(p.read_bytes())
    data[600:700] = b"\xff" * 100  # inside the first member: a bad CRC or a broken header
    p.write_bytes(bytes(data))
    return p


def _labels(values: list[float]) -> np.ndarray:
    y = (np.arange(20) % 10).astype(np.float64)
    y[3 : 3 + len(values)] = values
    return y


def _run_file(c: Ctx, name: str) -> str:
    return str(c.run() / name)


def _full_home(c: Ctx) -> Path:
    h = c.mount(c.tmp / "full", "12m")
    home_with_a_bad_file(h)
    fill(h)
    return h


def _ro_home(c: Ctx) -> Path:
    h = c.mount(c.tmp / "ro", "12m")
    home_with_a_bad_file(h)
    subprocess.run(["mount", "-o", "remount,ro", str(h)], check=True)
    return h


def _file_home(c: Ctx) -> Path:
    f = c.tmp / "home-file"
    f.write_text("not a folder\n")
    return f


def _pics(c: Ctx) -> Path:
    d = c.tmp / "pics"
    d.mkdir(exist_ok=True)
    from mnistlab.photolike import draw_digit

    draw_digit(3).save(d / "three.png")
    draw_digit(7).save(d / "seven.png")
    return d


def _out_with_foreign(c: Ctx) -> Path:
    d = c.tmp / "out"
    d.mkdir(exist_ok=True)
    foreign_png(d / "three.png")
    return d


CASES: dict[str, Callable[[Ctx], Case]] = {
    # -- data: broken .npz files (item 9)
    "import truncated npz": lambda c: Case(["data", "import", "mnist", str(_truncated_npz(c))], 2, "not a readable .npz"),
    "show truncated npz": lambda c: Case(["data", "show", str(_truncated_npz(c))], 2, "not a readable .npz"),
    "grid truncated npz": lambda c: Case(["data", "grid", str(_truncated_npz(c)), "-o", str(c.tmp / "g.png")], 2, "not a readable .npz"),
    "show corrupt npz member": lambda c: Case(["data", "show", str(_half_npz(c))], 2, ".npz"),
    "train on truncated npz": lambda c: Case(["train", "--dataset", str(_truncated_npz(c)), "--out", str(c.tmp / "r"), "--epochs", "1"], 2, "not a readable .npz"),
    "show text file as npz": lambda c: Case(["data", "show", str((c.tmp / "a.npz").write_text("hello") and c.tmp / "a.npz")], 2, "not a readable .npz"),
    "show npz missing arrays": lambda c: Case(["data", "show", str((np.savez(c.tmp / "m.npz", x_train=np.zeros((2, 28, 28), np.uint8)), c.tmp / "m.npz")[1])], 2, "missing arrays"),
    # -- data: labels and shapes
    "NaN label": lambda c: Case(["data", "show", str(npz(c.tmp / "n.npz", labels=_labels([np.nan])))], 2, "label nan at index 3 is not a number"),
    "inf label": lambda c: Case(["data", "show", str(npz(c.tmp / "n.npz", labels=_labels([np.inf])))], 2, "is not a number"),
    "float label 5.7": lambda c: Case(["data", "show", str(npz(c.tmp / "f.npz", labels=_labels([5.7])))], 2, "label 5.7 at index 3 is not a whole number"),
    "negative label": lambda c: Case(["data", "show", str(npz(c.tmp / "g.npz", labels=np.where(np.arange(20) == 4, -1, np.arange(20) % 10)))], 2, "label -1 at index 4 is negative"),
    "label above 255": lambda c: Case(["data", "show", str(npz(c.tmp / "h.npz", labels=np.where(np.arange(20) == 2, 300, np.arange(20) % 10)))], 2, "above 255"),
    "string labels": lambda c: Case(["data", "show", str(npz(c.tmp / "s.npz", labels=np.array(["a"] * 20)))], 2, "labels must be integers"),
    "stray label 255 in IDX set": lambda c: Case(["data", "show", str(idx_folder(c.tmp / "idx", np.where(np.arange(20) == 5, 255, np.arange(20) % 10).astype(np.uint8)))], 2, "245 of the classes 0..255 have no image"),
    "stray label 255 in train": lambda c: Case(["train", "--dataset", str(idx_folder(c.tmp / "idx", np.where(np.arange(20) == 5, 255, np.arange(20) % 10).astype(np.uint8))), "--out", str(c.tmp / "r")], 2, "have no image"),
    "5 channels": lambda c: Case(["data", "show", str(npz(c.tmp / "c.npz", x=np.zeros((20, 28, 28, 5), np.uint8)))], 2, "got 5 channels"),
    "channels first": lambda c: Case(["data", "show", str(npz(c.tmp / "c.npz", x=np.zeros((20, 1, 28, 28), np.uint8)))], 2, "got 28 channels"),
    "float images": lambda c: Case(["data", "show", str(npz(c.tmp / "c.npz", x=np.zeros((20, 28, 28), np.float32)))], 2, "must be uint8"),
    "count mismatch": lambda c: Case(["data", "show", str(npz(c.tmp / "c.npz", labels=np.arange(19) % 10))], 2, "20 train images but 19 train labels"),
    # -- data: IDX files
    "IDX gzip bomb in a folder": lambda c: Case(["data", "show", str(_bomb_folder(c))], 2, "more than the"),
    "truncated IDX gzip": lambda c: Case(["data", "show", str(_truncated_gz_folder(c))], 2, "corrupt or truncated gzip"),
    "IDX wrong magic": lambda c: Case(["data", "show", str(_wrong_magic_folder(c))], 2, "wrong magic number"),
    "IDX too long": lambda c: Case(["data", "show", str(_long_idx_folder(c))], 2, "does not match its header"),
    # -- data import: the data home (items 5, 10)
    "import onto a full disk": lambda c: (h := _full_home(c)) and Case(["data", "import", "mnist", str(MNIST)], 2, "No space left on device", [h], {"MNISTLAB_HOME": str(h)}),
    "import into a read-only home": lambda c: (h := _ro_home(c)) and Case(["data", "import", "mnist", str(MNIST)], 2, "Read-only file system", [h], {"MNISTLAB_HOME": str(h)}),
    "import with MNISTLAB_HOME a file": lambda c: (f := _file_home(c)) and Case(["data", "import", "mnist", str(MNIST)], 2, "check MNISTLAB_HOME", [f], {"MNISTLAB_HOME": str(f)}),
    "import wrong content": lambda c: Case(["data", "import", "mnist", str(FASHION)], 2, "content MD5"),
    "import missing path": lambda c: Case(["data", "import", "mnist", str(c.tmp / "nowhere")], 2, "not a folder of IDX files"),
    "import empty folder": lambda c: Case(["data", "import", "mnist", str((c.tmp / "e").mkdir() or c.tmp / "e")], 2, "expected train-images"),
    "import unknown name": lambda c: Case(["data", "import", "cifar", str(MNIST)], 2, "invalid choice"),
    # -- data download
    "download timeout -1": lambda c: Case(["data", "download", "mnist", "--timeout", "-1", "--mirror", "http://127.0.0.1:9/"], 2, "--timeout must be a positive number"),
    "download timeout nan": lambda c: Case(["data", "download", "mnist", "--timeout", "nan", "--mirror", "http://127.0.0.1:9/"], 2, "--timeout must be a positive number"),
    "download timeout inf": lambda c: Case(["data", "download", "mnist", "--timeout", "inf", "--mirror", "http://127.0.0.1:9/"], 2, "--timeout must be a positive number"),
    "download 1000 MiB mirror": lambda c: Case(["data", "download", "mnist", "--mirror", c.mirror() + "/huge/"], 2, f"announces 1,048,576,000 bytes, more than the {CAP:,}"),
    "download endless mirror": lambda c: Case(["data", "download", "mnist", "--mirror", c.mirror() + "/endless/"], 2, f"sent more than the {CAP:,} bytes"),
    "download gzip bomb": lambda c: Case(["data", "download", "mnist", "--mirror", c.mirror() + "/bomb/"], 2, "its header promises 784,000,016 bytes"),
    "download with MNISTLAB_HOME a file": lambda c: (f := _file_home(c)) and Case(["data", "download", "mnist", "--mirror", c.mirror() + "/good/"], 2, "check MNISTLAB_HOME", [f], {"MNISTLAB_HOME": str(f)}),
    "download onto a full disk": lambda c: (h := c.mount(c.tmp / "full", "2m")) and (fill(h) or True) and Case(["data", "download", "mnist", "--mirror", c.mirror() + "/good/"], 2, "No space left on device", [h], {"MNISTLAB_HOME": str(h)}),
    # -- data show / grid
    "grid count 100000": lambda c: Case(["data", "grid", "mnist", "--count", "100000", "-o", str(c.tmp / "g.png")], 2, "--count must lie in 1..400"),
    "grid count 0": lambda c: Case(["data", "grid", "mnist", "--count", "0", "-o", str(c.tmp / "g.png")], 2, "--count must lie in 1..400"),
    "grid onto a user's picture": lambda c: Case(["data", "grid", "mnist", "-o", str(foreign_png(c.tmp / "mine.png"))], 2, "was not written by mnistlab"),
    "grid onto a checkpoint name": lambda c: Case(["data", "grid", "mnist", "-o", str(c.tmp / "x.safetensors")], 2, "cannot write a .safetensors picture"),
    "grid onto a folder": lambda c: Case(["data", "grid", "mnist", "-o", str(c.tmp)], 2, "is a folder"),
    "show missing path": lambda c: Case(["data", "show", str(c.tmp / "nothing")], 2, "no such file or folder"),
    # -- output files (item 2): one rule for report, plot, export, augment preview
    "report onto the checkpoint": lambda c: Case(["report", str(c.run()), "-o", _run_file(c, "last.safetensors")], 2, "this writes .html/.htm files"),
    "report onto the checkpoint renamed": lambda c: Case(["report", str(c.run()), "-o", str(_ckpt_as_html(c))], 2, "is a checkpoint"),
    "report onto a user's page": lambda c: Case(["report", str(c.run()), "-o", str((c.tmp / "mine.html").write_text("<p>mine</p>") and c.tmp / "mine.html")], 2, "was not written by mnistlab"),
    "report onto metrics.csv": lambda c: Case(["report", str(c.run()), "-o", _run_file(c, "metrics.csv")], 2, "not .csv"),
    "report onto a device": lambda c: Case(["report", str(c.run()), "-o", "/dev/null"], 2, "not a regular file"),
    "plot onto the checkpoint": lambda c: Case(["plot", str(c.run()), "-o", _run_file(c, "best.safetensors")], 2, "cannot write a .safetensors picture"),
    "plot onto a user's picture": lambda c: Case(["plot", str(c.run()), "-o", str(foreign_png(c.tmp / "photo.png"))], 2, "was not written by mnistlab"),
    "export onto the checkpoint": lambda c: Case(["export", str(c.run()), "-o", _run_file(c, "last.safetensors"), "--no-check"], 2, "refusing to overwrite a run's own file"),
    "export onto a user's text": lambda c: Case(["export", str(c.run()), "-o", str((c.tmp / "notes.txt").write_text("mine") and c.tmp / "notes.txt"), "--no-check"], 2, "was not written by mnistlab"),
    "export txt as .onnx": lambda c: Case(["export", str(c.run()), "-o", str(c.tmp / "w.onnx"), "--no-check"], 2, "this writes .txt files"),
    "augment preview onto a user's picture": lambda c: Case(["augment", "preview", "-o", str(foreign_png(c.tmp / "p.png"))], 2, "was not written by mnistlab"),
    # -- predict --save-input (item 6)
    "save-input into the inputs' folder": lambda c: (d := _pics(c)) and Case(["predict", str(c.run()), str(d), "--save-input", str(d)], 2, "holds the input pictures"),
    "save-input over a user's file": lambda c: (d := _pics(c)) and (o := _out_with_foreign(c)) and Case(["predict", str(c.run()), str(d), "--save-input", str(o)], 2, "three.png exists and was not written by mnistlab"),
    "save-input onto a file": lambda c: (d := _pics(c)) and Case(["predict", str(c.run()), str(d), "--save-input", str(d / "three.png")], 2, "exists and is not a folder"),
    # -- serve arguments
    "serve max-upload nan": lambda c: Case(["serve", str(c.tmp), "--max-upload-mb", "nan"], 2, "--max-upload-mb must be a number"),
    "serve max-upload inf": lambda c: Case(["serve", str(c.tmp), "--max-upload-mb", "inf"], 2, "--max-upload-mb must be a number"),
    "serve max-upload -1": lambda c: Case(["serve", str(c.tmp), "--max-upload-mb", "-1"], 2, "--max-upload-mb must be a number"),
    "serve max-upload 0": lambda c: Case(["serve", str(c.tmp), "--max-upload-mb", "0"], 2, "--max-upload-mb must be a number"),
    "serve max-decodes 0": lambda c: Case(["serve", str(c.tmp), "--max-decodes", "0"], 2, "--max-decodes must be ≥ 1"),
    "serve body-timeout -5": lambda c: Case(["serve", str(c.tmp), "--body-timeout", "-5"], 2, "--body-timeout must be a positive"),
}  # fmt: skip


def _bomb_folder(c: Ctx) -> Path:
    d = idx_folder(c.tmp / "bomb", (np.arange(20) % 10).astype(np.uint8))
    (d / PARTS["x_train"]).unlink()
    head = struct.pack(">HBB3I", 0, 8, 3, 2_000_000, 28, 28)  # 1.5 GB promised, a few kB sent
    (d / f"{PARTS['x_train']}.gz").write_bytes(gzip.compress(head + b"\0" * 100_000))
    return d


def _truncated_gz_folder(c: Ctx) -> Path:
    d = idx_folder(c.tmp / "tgz", (np.arange(20) % 10).astype(np.uint8))
    data = gzip.compress((d / PARTS["x_train"]).read_bytes())
    (d / PARTS["x_train"]).unlink()
    (d / f"{PARTS['x_train']}.gz").write_bytes(data[: len(data) // 2])
    return d


def _wrong_magic_folder(c: Ctx) -> Path:
    d = idx_folder(c.tmp / "magic", (np.arange(20) % 10).astype(np.uint8))
    f = d / PARTS["y_test"]
    f.write_bytes(b"PK\x03\x04" + f.read_bytes()[4:])
    return d


def _long_idx_folder(c: Ctx) -> Path:
    d = idx_folder(c.tmp / "long", (np.arange(20) % 10).astype(np.uint8))
    with open(d / PARTS["y_train"], "ab") as f:
        f.write(b"\x01\x02")
    return d


def _ckpt_as_html(c: Ctx) -> Path:
    p = c.tmp / "looks-like-a-page.html"
    shutil.copy(c.run() / "last.safetensors", p)
    return p


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, mirror: str) -> Iterator[Ctx]:
    home = tmp_path / "home"
    monkeypatch.setenv("MNISTLAB_HOME", str(home))
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", "")
    monkeypatch.chdir(tmp_path)
    mounts: list[contextlib.ExitStack] = []

    def mount(folder: Path, size: str) -> Path:
        stack = contextlib.ExitStack()
        mounts.append(stack)
        return stack.enter_context(tmpfs(folder, size))

    def run() -> Path:
        folder = request.getfixturevalue("small_run")
        c.used_run[:] = [folder]  # a case that names the run also watches it
        return folder

    c = Ctx(tmp_path, home, run, lambda: mirror, mount)
    yield c
    for stack in reversed(mounts):
        stack.close()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_cli_input(name: str, ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name](ctx)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    watch = [ctx.tmp, *case.watch, *ctx.used_run]
    before = {str(w): tree_hash(w) for w in watch}
    rc, out, err = run_main(case.argv)
    text = out + err
    assert rc == case.code, (rc, text)
    assert "Traceback" not in text, text
    lines = err.strip().splitlines()
    assert len(lines) == 1 and case.fragment in lines[0], err
    after = {str(w): tree_hash(w) for w in watch}
    assert after == before, f"{name}: files changed on disk"


def test_suite_is_large_enough() -> None:
    assert len(CASES) + len(WEB_CASES) >= 50


# -- what the table cannot say in one line ----------------------------------------------------------


def test_full_disk_import_keeps_the_good_copy(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    h = _full_home(ctx)
    monkeypatch.setenv("MNISTLAB_HOME", str(h))
    good = (h / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    rc, _, err = run_main(["data", "import", "mnist", str(MNIST)])
    assert rc == 2 and "No space left on device" in err
    assert (h / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == good
    assert not list((h / "mnist").glob(".*"))  # no temp file left behind
    (h / ".filler").unlink()
    rc, out, err = run_main(["data", "import", "mnist", str(MNIST)])
    assert rc == 0, err
    assert sorted(p.name for p in (h / "mnist").iterdir()) == sorted(
        [f"{p}.gz" for p in PARTS.values()] + [next(p.name for p in (h / "mnist").glob("*.replaced-*"))]
    )


def test_downloads_leave_no_temp_files(ctx: Ctx, mirror: str) -> None:
    for kind in ("huge", "bomb"):
        rc, _, err = run_main(["data", "download", "mnist", "--mirror", f"{mirror}/{kind}/"])
        assert rc == 2, err
        assert not ctx.home.exists()  # not even the folders it made


def test_data_list_does_not_call_a_wrong_file_used(ctx: Ctx) -> None:
    home_with_a_bad_file(ctx.home)
    rc, out, _ = run_main(["data", "list"])
    assert rc == 0
    row = next(line for line in out.splitlines() if str(ctx.home / "mnist") in line)
    assert "(used)" not in row and "t10k-labels-idx1-ubyte.gz has the wrong content" in row
    shutil.copy(MNIST / "t10k-labels-idx1-ubyte.gz", ctx.home / "mnist")
    rc, out, _ = run_main(["data", "list"])
    assert "present (used)" in next(line for line in out.splitlines() if str(ctx.home / "mnist") in line)


def test_damaged_cache_is_rebuilt_and_said(ctx: Ctx, capsys: pytest.CaptureFixture) -> None:
    from mnistlab.datasets import load
    from mnistlab.datasets.build import load_data

    ref = load("mnist", progress=False)
    ref_x, ref_y = np.array(ref.x_train), np.array(ref.y_train)
    (cache,) = (ctx.home / "cache").iterdir()
    with open(cache / "x_train.npy", "r+b") as f:  # two flipped bytes in the pixels
        f.seek(200_000)
        b = f.read(2)
        f.seek(200_000)
        f.write(bytes([b[0] ^ 0x10, b[1] ^ 0x01]))
    capsys.readouterr()
    ds = load("mnist", progress=False)
    assert np.array_equal(ds.x_train, ref_x)
    assert f"the decoded cache {cache} is damaged (x_train.npy" in capsys.readouterr().err
    os.truncate(cache / "y_train.npy", 1000)
    ds = load("mnist", progress=False)
    assert np.array_equal(ds.y_train, ref_y) and "y_train.npy" in capsys.readouterr().err
    # Warm again: checked, and fast (the budget is 50 ms; the median of 5 loads, on a loaded machine).
    times = []
    for _ in range(5):
        t = time.perf_counter()
        load_data("mnist")
        times.append(time.perf_counter() - t)
    assert capsys.readouterr().err == ""
    assert sorted(times)[2] < 0.25, times


def test_newline_in_a_file_name_stays_on_one_line(ctx: Ctx) -> None:
    from mnistlab.photolike import draw_digit

    d = ctx.tmp / "odd"
    d.mkdir()
    draw_digit(3).save(d / "a\nb.png")
    rc, out, err = run_main(["predict", str(ctx.run()), str(d)])
    assert rc == 0, err
    assert out.count("\n") == 1 and "a\\nb.png: 3" in out


def test_save_input_writes_and_rewrites_its_own_files(ctx: Ctx) -> None:
    d = _pics(ctx)
    out = ctx.tmp / "seen"
    for _ in range(2):  # the second run replaces what the first wrote: that is allowed
        rc, _, err = run_main(["predict", str(ctx.run()), str(d), "--save-input", str(out)])
        assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["seven.png", "three.png"]


def test_force_replaces_a_foreign_file(ctx: Ctx) -> None:
    target = foreign_png(ctx.tmp / "mine.png")
    rc, _, err = run_main(["data", "grid", "mnist", "--count", "4", "-o", str(target), "--force"])
    assert rc == 0, err
    rc, _, err = run_main(["data", "grid", "mnist", "--count", "4", "-o", str(target)])  # ours now
    assert rc == 0, err


# -- the web server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``mnistlab serve`` in a real process: two decoders, a 2-second body timeout."""
    log = tmp_path_factory.mktemp("web") / "server.log"
    options = ["--max-decodes", "2", "--body-timeout", "2", "--allow-host", "digits.example"]
    with serve_process(small_run, log, *options) as served:
        yield served


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def _huge_rgba() -> bytes:
    """The issue's picture: 6300×6300 RGBA, about 150 KB as PNG, under both old limits."""
    return _png(Image.new("RGBA", (6300, 6300), (0, 0, 0, 255)))


def _deep_json(depth: int) -> bytes:
    return b'{"image": ' + b"[" * depth + b"]" * depth + b"}"


IMAGE = {"content-type": "image/png"}
WEB_CASES: dict[str, tuple[str, str, dict, int, str]] = {
    # name: (method, path, httpx kwargs, status, fragment of the JSON error)
    "foreign Host": ("GET", "/", {"headers": {"host": "evil.example"}}, 400, "Host header not allowed"),
    "foreign Host with port": ("GET", "/api/model", {"headers": {"host": "evil.example:8000"}}, 400, "Host header not allowed"),
    "foreign Host on predict": ("POST", "/api/predict", {"headers": {"host": "attacker.test", **IMAGE}, "content": b"x"}, 400, "Host header not allowed"),
    "empty Host": ("GET", "/healthz", {"headers": {"host": ""}}, 400, "Host header not allowed"),
    "6300x6300 RGBA PNG": ("POST", "/api/predict", {"content": _huge_rgba, "headers": IMAGE}, 400, "6300×6300 pixels"),
    "2100x2100 RGBA PNG": ("POST", "/api/predict", {"content": lambda: _png(Image.new("RGBA", (2100, 2100))), "headers": IMAGE}, 400, "4 megapixels"),
    "JSON nested 100,000 deep": ("POST", "/api/predict", {"content": lambda: _deep_json(100_000), "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    "JSON array": ("POST", "/api/predict", {"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 400, "JSON body must be an object"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WEB_CASES))
def test_bad_web_input(name: str, web, small_run: Path) -> None:
    method, path, kwargs, status, fragment = WEB_CASES[name]
    before = tree_hash(small_run)
    kwargs = {k: v() if callable(v) else v for k, v in kwargs.items()}
    try:
        r = httpx.request(method, web[0] + path, timeout=60, **kwargs)
    except httpx.LocalProtocolError:
        pytest.skip("httpx refuses to send this header")
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and fragment in r.json()["error"]
    assert "\n" not in r.json()["error"] and "Traceback" not in r.text
    assert str(small_run) not in r.text
    assert tree_hash(small_run) == before


def test_allowed_hosts_and_security_headers(web, small_run: Path) -> None:
    port = web[0].rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "digits.example", f"[::1]:{port}", "app.localhost"):
        r = httpx.get(web[0] + "/healthz", headers={"host": host}, timeout=30)
        assert r.status_code == 200, host
    r = httpx.get(web[0] + "/", timeout=30)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    info = httpx.get(web[0] + "/api/model", timeout=30)
    assert info.json()["checkpoint"] == "best.safetensors" and str(small_run) not in info.text


def test_slow_body_is_cut_off(web) -> None:
    port = int(web[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
        )
        t0 = time.monotonic()
        answer = b""
        with contextlib.suppress(OSError):
            for _ in range(20):  # one byte a second, as the client did
                s.sendall(b"\0")
                s.settimeout(1)
                try:
                    answer += s.recv(4096)
                except TimeoutError:
                    continue
                if answer:
                    break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - t0 < 10


def _rss(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def test_six_concurrent_large_pictures_stay_under_1_gb(web) -> None:
    """Six at once of the issue's 6300×6300 picture (refused from its header), then six just under the
    pixel limit (decoded, two at a time): the server's peak RSS stays under 1 GB."""
    from concurrent.futures import ThreadPoolExecutor

    bomb = _huge_rgba()
    near = _png(Image.new("RGBA", (1990, 1990), (0, 0, 0, 255)))

    def post(body: bytes) -> int:
        return httpx.post(web[0] + "/api/predict", content=body, headers=IMAGE, timeout=120).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(post, [bomb] * 6)) == [400] * 6
        assert set(pool.map(post, [near] * 6)) <= {200, 422}
    mem = _rss(web[1].pid)
    print(f"server peak RSS {mem['VmHWM'] / 2**20:.0f} MiB, now {mem['VmRSS'] / 2**20:.0f} MiB")
    assert mem["VmHWM"] < 1 << 30, mem
    assert httpx.get(web[0] + "/healthz", timeout=30).status_code == 200
    assert "Traceback" not in web[2].read_text()
