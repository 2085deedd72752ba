"""Every example in README.md runs, in order, so the README never rots.

``sh`` blocks run line by line: a plain ``mnistlab ...`` line (or ``printf ... | mnistlab ...``) through
``mnistlab.cli.main`` in this process, any other line in bash, except ``make`` lines (they are what runs
this test) and ``torchrun`` lines (other machines). ``python`` blocks run in this process as ``__main__``
scripts; a block that starts the server starts a real one. All run in one temp folder with a fresh data
home, and with ``python``, ``mnistlab`` and the package of this checkout first on PATH and PYTHONPATH.
``run_readme(path, folder)`` takes the README's path, so a translated README is tested the same way.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
import traceback
from pathlib import Path

import pytest

from tests.helpers import FASHION_SYSTEM, ROOT, find_dataset, process_state, run_cli

BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.S)
READMES = [ROOT / "README.md", ROOT / "README.zh.md"]
SHELL = re.compile(r"[|&;<>$`(){}*?~]")  # a line with any of these needs a shell
FEED = re.compile(r"^((?:printf|echo) [^|]*)\|\s*(mnistlab .*)$")  # printf '...' | mnistlab ...


def blocks(readme: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(readme.read_text(encoding="utf-8"))


def commands(code: str) -> list[str]:
    """The lines of an ``sh`` block this test runs, comments stripped."""
    lines = (line.split("  #")[0].strip() for line in code.splitlines())
    return [c for c in lines if c and not c.startswith(("make ", "#", "torchrun "))]


def run_sh(cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    feed = FEED.match(cmd)
    if feed:  # what the shell would pipe in becomes the command's stdin
        made = subprocess.run(["bash", "-c", feed[1]], cwd=cwd, env=env, capture_output=True, text=True, check=True)
        return run_cli(*shlex.split(feed[2])[1:], env=env, cwd=cwd, input=made.stdout)
    if cmd.startswith("mnistlab ") and not SHELL.search(cmd):
        return run_cli(*shlex.split(cmd)[1:], env=env, cwd=cwd)
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_python(code: str, name: str, cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
    """Run a block as a script in this process; return whether it finished and what it printed."""
    out = io.StringIO()
    with process_state(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            exec(compile(code, name, "exec"), {"__name__": "__main__"})  # noqa: S102 - the README's own example
        except BaseException:  # noqa: BLE001 - any failure of the example is the test's failure
            traceback.print_exc()
            return False, out.getvalue()
    return True, out.getvalue()


def run_readme(readme: Path, folder: Path) -> None:
    """Run every ``sh`` and ``python`` example of ``readme`` in order inside ``folder``."""
    fashion = find_dataset("fashion-mnist")
    if fashion is None:
        pytest.skip("no Fashion-MNIST files here (Debian's dataset-fashion-mnist, or ../shared/datasets)")
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "MNISTLAB_HOME": str(folder / "home"),
        "MPLBACKEND": "Agg",
    }
    for i, (kind, code) in enumerate(blocks(readme)):
        where = f"{readme.name} block {i}"
        if kind == "sh":
            for cmd in commands(code):
                # The README imports Debian's copy; where only the shared copy exists, import that one.
                run = cmd.replace(str(FASHION_SYSTEM), str(fashion)) if not FASHION_SYSTEM.is_dir() else cmd
                r = run_sh(run, folder, {**os.environ, **env})
                assert r.returncode == 0, f"{where}: {cmd!r} failed:\n{r.stdout}\n{r.stderr}"
        else:
            ok, printed = run_python(code, where, folder, env)
            assert ok, f"{where} (python) failed:\n{printed}"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.name)
def test_readme_has_examples(readme: Path) -> None:
    kinds = [k for k, _ in blocks(readme)]
    assert kinds.count("sh") >= 3 and kinds.count("python") >= 3


def test_readme_examples_run(tmp_path: Path) -> None:
    run_readme(READMES[0], tmp_path)


def _code(kind: str, code: str) -> list[str]:
    """What runs of a block, comments stripped: its command lines (sh) or its whole code (python)."""
    if kind == "sh":
        return commands(code)
    toks = [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type != tokenize.COMMENT]
    text = tokenize.untokenize((t.type, t.string) for t in toks)
    return ["\n".join(line.rstrip() for line in text.splitlines() if line.strip())]


@pytest.mark.parametrize("readme", READMES[1:], ids=lambda p: p.name)
def test_translated_readme_runs_the_same_code(readme: Path) -> None:
    # A translation changes the prose and the comments only: every command and Python block it shows is
    # one that test_readme_examples_run runs from the English README, so it stays true without a second run.
    english = {c for kind, code in blocks(READMES[0]) for c in _code(kind, code)}
    for kind, code in blocks(readme):
        for c in _code(kind, code):
            assert c in english, f"{readme.name}: this {kind} code is not in README.md, so nothing runs it:\n{c}"
