"""`mnistlab data list|show|grid` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.helpers import run_cli, run_cli_process


def test_list_shows_the_lookup_order(home: Path) -> None:
    # A new interpreter, once: `python -m mnistlab` itself (the other tests call main() in this process).
    r = run_cli_process("data", "list", env={"MNISTLAB_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"data home: {home}" in lines[0]
    mnist = lines[lines.index("mnist: MNIST handwritten digits") + 1 :][:4]
    assert [line.split()[1] for line in mnist] == ["home", "system", "embedded", "download"]
    assert "present (used)" in mnist[2]


def test_show_prints_the_first_image_and_its_label() -> None:
    r = run_cli("data", "show", "mnist", "--index", "0")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert "3  18  18  18 126 136 175  26 166 255 247 127" in rows[5]
    assert rows[-1] == "label: 5"
    bad = run_cli("data", "show", "mnist", "--index", "70000")
    assert bad.returncode == 2 and "out of range" in bad.stderr and "Traceback" not in bad.stderr


def test_grid_writes_a_labelled_png(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    r = run_cli("data", "grid", "mnist", "-o", str(out), "--count", "20")
    assert r.returncode == 0, r.stderr
    img = Image.open(out).convert("L")
    assert img.width > 300 and img.height > 100
    import numpy as np

    assert np.asarray(img).std() > 20  # not blank


def test_unknown_dataset_is_one_line() -> None:
    r = run_cli("data", "show", "no_such_set")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no_such_set" in r.stderr
