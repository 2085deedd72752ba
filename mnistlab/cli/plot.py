"""``mnistlab plot RUN``: training curves, confusion matrix, most confident mistakes, per-class accuracy."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a run's curves, confusion matrix, mistakes or per-class accuracy as PNG",
        description="Without a figure option, draw the training curves. Figures other than the curves "
        "predict the test split with the run's checkpoint.",
    )
    p.add_argument("run", help="run folder (or checkpoint file)")
    figures = "curves.png, confusion.png, mistakes.png or per_class.png"
    p.add_argument("-o", "--output", help=f"file for a single figure, .png/.svg/.pdf/.jpg (default: {figures})")
    p.add_argument("--curves", action="store_true", help="accuracy and loss per epoch (default: on if nothing else)")
    p.add_argument("--confusion", action="store_true", help="confusion matrix on the test split (default: off)")
    p.add_argument("--mistakes", type=int, default=0, metavar="N", help="the N most confident mistakes (default: 0)")
    p.add_argument("--per-class", action="store_true", help="per-class accuracy bars (default: off)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint that predicts (default: best)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of raster files (default: 100)")
    p.add_argument("--show", action="store_true", help="also open windows when a display exists (default: off)")
    p.add_argument("--force", action="store_true", help="replace -o even if mnistlab did not write it (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.plots import plot_run

    others = args.confusion or args.mistakes or args.per_class
    paths, shown = plot_run(
        args.run, curves=args.curves or not others, confusion=args.confusion, mistakes=args.mistakes,
        per_class=args.per_class, output=args.output, which=args.which, show=args.show, dpi=args.dpi, force=args.force,
    )  # fmt: skip
    for path in paths:
        print(f"wrote {path}")
    if args.show and not shown:
        print(
            "mnistlab: no window could open (no display or GUI toolkit here); the files above hold the figures",
            file=sys.stderr,
        )
    return 0
