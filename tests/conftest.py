"""Shared fixtures: an isolated data home, real data sets, shared trained runs, a real browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Tests import these from tests.helpers; the names stay here for tests written before helpers.py existed.
from tests.helpers import EMBEDDED, ROOT, SHARED, run_cli, shared_dataset  # noqa: F401


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data home for the whole session, so the decoded-data cache is shared by read-only tests."""
    return tmp_path_factory.mktemp("mnistlab-home")


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch, session_home: Path) -> None:
    # Never touch the user's ~/.mnistlab from a test.
    monkeypatch.setenv("MNISTLAB_HOME", str(session_home))


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh, empty data home for tests that write into it."""
    h = tmp_path / "home"
    monkeypatch.setenv("MNISTLAB_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files; a test asking for them is skipped where there are none."""
    return shared_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files (the shared copy, else the ones embedded in the package)."""
    return shared_dataset("mnist")


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Selenium through the system chromedriver."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Path:
    """A real run folder: the fast preset, 2 epochs on the first 5,000 MNIST training images (a few seconds)."""
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "small"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_HOME", str(session_home))
        train_run(from_preset("fast", epochs=2, limit_train=5000), out, verbose=0)
    return out


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Path:
    """A real run of the fast preset (the lesson's MLP) on full MNIST, trained once per session (~2 s)."""
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "mlp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_HOME", str(session_home))
        train_run(from_preset("fast"), out, verbose=0)
    return out
