"""Every example in README.md and README.zh.md runs, in order, so neither README rots.

``sh`` blocks run line by line in bash (``make`` lines excepted: they are what runs this test);
``python`` blocks run as scripts. All run in one temp folder with a fresh data home.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.S)


READMES = ["README.md", "README.zh.md"]


def blocks(readme: str = "README.md") -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / readme).read_text(encoding="utf-8"))


@pytest.mark.parametrize("readme", READMES)
def test_readme_has_examples(readme: str) -> None:
    kinds = [k for k, _ in blocks(readme)]
    assert kinds.count("sh") >= 3 and kinds.count("python") >= 3


@pytest.mark.parametrize("readme", READMES)
def test_readme_examples_run(readme: str, tmp_path: Path) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "MNISTLAB_HOME": str(tmp_path / "home"),
        "MPLBACKEND": "Agg",
    }
    for i, (kind, code) in enumerate(blocks(readme)):
        if kind == "sh":
            for line in code.splitlines():
                cmd = line.split("  #")[0].strip()
                if not cmd or cmd.startswith(("make ", "#", "torchrun ")):
                    continue
                r = subprocess.run(
                    ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                )
                assert r.returncode == 0, f"{readme} block {i}: {cmd!r} failed:\n{r.stdout}\n{r.stderr}"
        else:
            r = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert r.returncode == 0, f"{readme} python block {i} failed:\n{r.stdout}\n{r.stderr}"
