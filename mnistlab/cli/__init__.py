"""The ``mnistlab`` command: one module per command, each a few lines over a library function.

A user mistake (``MnistlabError``) becomes one line on stderr and a non-zero exit code, never a traceback;
so does the machine's (disk full, read-only, permission denied: exit 1). Anything else is a bug: its
traceback, a line asking for a report, and exit code 70.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from mnistlab import __version__
from mnistlab.errors import ENVIRONMENT_ERRNOS, MnistlabError

# Each name is a module ``mnistlab.cli.<name>`` with ``register(subparsers)``.
COMMANDS = [
    "data",
    "train",
    "runs",
    "evaluate",
    "ensemble",
    "plot",
    "report",
    "export",
    "augment",
    "predict",
    "serve",
    "import_keras",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnistlab", description="MNIST-style image classification on PyTorch: data, train, look, export, predict."
    )
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mnistlab.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MnistlabError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        from mnistlab.distributed import record_error

        record_error(e)  # under torchrun: its failure report shows this line, not "enable traceback"
        return e.exit_code
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            return _bug()
        where = f"{e.filename}: " if e.filename else ""
        print(f"mnistlab: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception:
        return _bug()


BUG_EXIT = 70  # EX_SOFTWARE (sysexits.h): an internal error


def _bug() -> int:
    """An exception no one expected is a bug: its traceback, and a line asking for a report."""
    traceback.print_exc()
    print(
        f"mnistlab: this is a bug in mnistlab {__version__}; please report it with the lines above "
        "(and the command that led to it)",
        file=sys.stderr,
    )
    return BUG_EXIT
