"""Downloads against a real HTTP server on 127.0.0.1 serving the real Fashion-MNIST files."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mnistlab.datasets import download as dl
from mnistlab.datasets import load
from mnistlab.datasets.specs import FASHION_MNIST, PARTS
from mnistlab.errors import DownloadError
from tests.helpers import http_server, run_cli


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/F serves Fashion-MNIST, /wrong/F serves MNIST under the same name, /truncated/F stops half-way,
    /slow/F never answers in time, anything else is 404."""

    def do_GET(self) -> None:  # noqa: N802
        kind, _, name = self.path.strip("/").partition("/")
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        src = self.server.sources.get(kind)  # type: ignore[attr-defined]
        if kind == "slow":
            time.sleep(3)
        if src is None or not (src / name).is_file():
            self.send_error(404)
            return
        body = (src / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(fashion_dir: Path, mnist_dir: Path) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    sources = {"good": fashion_dir, "truncated": fashion_dir, "wrong": mnist_dir}
    with http_server(Handler, sources=sources, hits=hits) as url:
        yield url, hits


@pytest.fixture
def no_system(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Debian's dataset-fashion-mnist may be installed: hide system folders so the download path runs.
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(tmp_path / "no-system"))


def test_download_success_with_progress(server, home: Path, no_system, capsys: pytest.CaptureFixture) -> None:
    base, _ = server
    ds = load("fashion_mnist", mirrors=[f"{base}/good/"])
    assert ds.x_train.shape == (60000, 28, 28) and np.bincount(ds.y_test).tolist() == [1000] * 10
    assert sorted(p.name for p in (home / "fashion_mnist").iterdir()) == sorted(f"{p}.gz" for p in PARTS.values())
    out = capsys.readouterr().out
    assert "Downloading" in out and "MB" in out  # progress lines with sizes


def test_first_mirror_404_then_second(server, home: Path, no_system) -> None:
    base, hits = server
    hits.clear()
    dl.download(FASHION_MNIST, home / "fashion_mnist", mirrors=[f"{base}/missing", f"{base}/good"], progress=False)
    assert any(h.startswith("/missing/") for h in hits) and any(h.startswith("/good/") for h in hits)
    assert load("fashion_mnist", download=False).x_train.shape == (60000, 28, 28)


@pytest.mark.parametrize("kind", ["truncated", "wrong"])
def test_bad_body_caches_nothing_and_keeps_users_files(server, home: Path, no_system, kind: str) -> None:
    base, _ = server
    folder = home / "fashion_mnist"
    folder.mkdir(parents=True)
    mine = folder / "notes.txt"
    mine.write_text("my file")
    with pytest.raises(DownloadError) as e:
        dl.download(FASHION_MNIST, folder, mirrors=[f"{base}/{kind}"], progress=False)
    msg = str(e.value)
    assert f"{base}/{kind}/train-images-idx3-ubyte.gz" in msg
    assert ("truncated" in msg) if kind == "truncated" else ("content MD5" in msg)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # no partial or temp file left
    assert mine.read_text() == "my file"


def test_all_mirrors_dead_gives_the_helpful_message(server, home: Path, no_system) -> None:
    base, _ = server
    mirrors = [f"{base}/missing", "http://127.0.0.1:9/"]
    with pytest.raises(DownloadError) as e:
        load("fashion_mnist", mirrors=mirrors, progress=False)
    msg = str(e.value)
    assert "HTTP 404" in msg and "127.0.0.1:9" in msg
    assert str(home / "fashion_mnist") in msg and "train-images-idx3-ubyte.gz" in msg and "data import" in msg
    assert "\n" not in msg


def test_timeout_moves_on(server, home: Path, no_system) -> None:
    base, _ = server
    folder = home / "fashion_mnist"
    dl.download(FASHION_MNIST, folder, mirrors=[f"{base}/slow", f"{base}/good"], timeout=0.5, progress=False,
                parts=["t10k-labels-idx1-ubyte"])  # fmt: skip
    assert (folder / "t10k-labels-idx1-ubyte.gz").is_file()


def test_cli_download_with_env_mirrors_and_failure(server, home: Path, no_system, tmp_path: Path) -> None:
    base, _ = server
    env = {"MNISTLAB_HOME": str(home), "MNISTLAB_SYSTEM_DIRS": str(tmp_path / "none")}
    bad = run_cli("data", "download", "fashion_mnist", env={**env, "MNISTLAB_MIRRORS": f"{base}/missing"})
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "could not download fashion_mnist" in bad.stderr
    ok = run_cli("data", "download", "fashion_mnist", env={**env, "MNISTLAB_MIRRORS": f"{base}/missing,{base}/good"})
    assert ok.returncode == 0, ok.stderr
    assert "files verified" in ok.stdout


def test_the_test_server_leaves_no_request_running(capfd: pytest.CaptureFixture) -> None:
    # A request thread that outlived its test once printed a client's hang-up while the next test parsed
    # source, which CPython 3.11 cannot do in two threads at once (see tests.helpers.http_server).
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(0.5)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    def requests() -> list[threading.Thread]:  # this server's (the module's server may still answer one)
        return [t for t in threading.enumerate() if t.name.endswith("(process_request_thread)") and t not in before]

    before = set(threading.enumerate())
    with http_server(Slow) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /slow HTTP/1.0\r\n\r\n")  # and hang up before the answer
        time.sleep(0.1)
        assert requests()
    assert not requests()
    assert capfd.readouterr().err == ""
