"""notebooks/lesson.ipynb runs top to bottom in a real Jupyter kernel, and is saved without outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_dataset

NOTEBOOK = ROOT / "notebooks" / "lesson.ipynb"


def test_notebook_is_saved_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 15
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"code cells {dirty} keep outputs: clear them before saving (Kernel > Restart & Clear Output)"
    assert "widgets" not in nb["metadata"]


def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    fashion = shared_dataset("fashion-mnist")
    # The kernel is a child process: it inherits this environment (data home isolated, no downloads,
    # Fashion-MNIST from the shared files, this checkout's mnistlab, the venv's python first on PATH).
    monkeypatch.setenv("MNISTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(fashion.parent))
    monkeypatch.setenv("MNISTLAB_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend shows figures
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    nbformat.write(nb, tmp_path / "lesson.executed.ipynb")  # to look at when an assertion below fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    images = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 9, f"expected the notebook's figures inline, got {images}"
    text = "\n".join(o.get("text", "") for c in code for o in c.outputs)
    assert "x_train.shape: (60000, 28, 28) uint8" in text
    assert 'Model: "mlp"' in text and "Total params: 101,770" in text
    assert "parity (NumPy from txt vs PyTorch)" in text
    assert "drawn_3.png -> 3 " in text
    work = tmp_path / "lesson_work"
    assert (work / "runs" / "checkpoint" / "weights-keras.txt").is_file()
    assert (work / "my_dataset").is_dir()
    assert not (ROOT / "lesson_work").exists()  # everything went to the temp folder
