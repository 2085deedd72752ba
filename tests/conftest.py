"""Shared fixtures: an isolated data home, real data paths, a subprocess runner, a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
EMBEDDED = ROOT / "mnistlab" / "datasets" / "data" / "mnist"


def shared_dataset(name: str) -> Path:
    """``../shared/datasets/<name>``, the real files; falls back to what ships or Debian installs."""
    folder = SHARED / name
    if folder.is_dir():
        return folder
    fallback = {"mnist": EMBEDDED, "fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}[name]
    if not fallback.is_dir():
        pytest.skip(f"no {name} files here")
    return fallback


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


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m mnistlab ARGS`` in a real subprocess (``input`` is fed to its stdin)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        input=input,
    )


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
