"""The package's ``>>>`` examples run as tests (``--doctest-modules``): each in a temp folder, with a data home
of their own that all examples share, and Fashion-MNIST found wherever this machine has it."""

from __future__ import annotations

import os

# Before anything imports torch: every run in the suite trains with one thread per process. Auto threads
# follow the machine's load (mnistlab.devices.resolve_threads) and the count changes the last bits, so two
# runs a test compares bit for bit must not depend on what else the machine (or the other test worker) does.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.util  # noqa: E402
from pathlib import Path

import pytest

from tests.helpers import FASHION_SYSTEM, find_dataset


@pytest.fixture(scope="session")
def doctest_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("doctest-home")


@pytest.fixture(autouse=True)
def _doctest_folder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if type(request.node).__name__ != "DoctestItem":  # a test from tests/: its own fixtures
        return
    folder = request.getfixturevalue("tmp_path")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MNISTLAB_HOME", str(request.getfixturevalue("doctest_home")))
    fashion = find_dataset("fashion-mnist")
    if fashion is not None and not FASHION_SYSTEM.is_dir():
        monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(fashion.parent))
    elif fashion is None and "fashion" in request.node.name:
        pytest.skip("no Fashion-MNIST files here")


# The web app's module needs the `web` extra; without it, leave its examples out rather than fail collecting.
collect_ignore = [] if importlib.util.find_spec("fastapi") else ["mnistlab/web"]
