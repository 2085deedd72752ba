"""The CLI starts at once: help, version and `data list` import neither torch nor matplotlib.

Each case runs in a fresh interpreter, since this test process has long imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab.cli import COMMANDS  # light: the CLI package imports no torch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "matplotlib")

PROBE = """
import json, sys
from mnistlab.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("\\n@@" + json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
"""


def _probe(args: list[str], home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MNISTLAB_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), *args], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    return json.loads(out.stdout.rsplit("\n@@", 1)[1])


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["data", "list"], *[[c.replace("_", "-"), "--help"] for c in COMMANDS]],
    ids=" ".join,
)
def test_light_commands_import_no_torch(args: list[str], tmp_path: Path) -> None:
    result = _probe(args, tmp_path)
    assert result["code"] in (0, None)
    assert result["heavy"] == []


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path: Path) -> None:
    # `evaluate` on a missing run fails, but only after importing the library: the probe would notice.
    result = _probe(["evaluate", str(tmp_path / "nothing")], tmp_path)
    assert result["code"] != 0
    assert "torch" in result["heavy"]


def test_train_help_has_no_doubled_percent_signs() -> None:
    from mnistlab.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    text = train.format_help()
    assert "%%" not in text and "97.8%" in text
