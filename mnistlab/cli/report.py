"""``mnistlab report RUN``: the whole run on one self-contained HTML page."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write one self-contained HTML page about a run (pictures embedded)")
    p.add_argument("run", help="run folder (or checkpoint file)")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint that predicts (default: best)")
    p.add_argument("--mistakes", type=int, default=24, metavar="N", help="most confident mistakes shown (default: 24)")
    p.add_argument("--force", action="store_true", help="replace -o even if mnistlab did not write it (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.report import write_report

    path = write_report(args.run, args.output, which=args.which, mistakes=args.mistakes, force=args.force)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB); open it in a browser")
    return 0
