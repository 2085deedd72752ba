"""``mnistlab runs [DIR]``: a table of the runs in DIR; ``--compare A B ... -o FILE`` overlays their curves."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list past runs, or overlay their curves",
        description="List the runs in DIR: model, data set, epochs, best validation (and what it was measured "
        "on), test accuracy, training time and date. With --compare, draw the given runs' curves on one figure.",
    )
    p.add_argument("dir", nargs="?", default="runs", help="folder holding run folders (default: runs)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="run folders whose curves to overlay")
    p.add_argument("-o", "--output", default="compare.png", help="file for --compare (default: compare.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        from mnistlab.plots import plot_compare

        print(f"wrote {plot_compare(args.compare, args.output)}")
        return 0
    from mnistlab.runfolder import runs_table

    print(runs_table(args.dir))
    return 0
