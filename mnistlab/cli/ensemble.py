"""``mnistlab ensemble RUN...``: the mean of several models' probabilities on the test split, with or without
test-time augmentation (``--tta``; one run with ``--tta`` is test-time augmentation alone)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="test accuracy of several runs' models together (and --tta)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoint files of one data set")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to use (default: best)")
    p.add_argument("--tta", action="store_true", help="also average each image moved one pixel each way")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.analysis import ensemble

    preds = ensemble(args.runs, args.which, tta=args.tta)
    members = preds.meta["members"]
    result = {"accuracy": preds.accuracy, "loss": preds.loss, "n": len(preds.y), "tta": args.tta, "members": members}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    tta = " with test-time augmentation" if args.tta else ""
    for m in members:
        print(f"{m['checkpoint']}: test accuracy {m['accuracy']:.4f}{tta}")
    print(f"ensemble of {len(members)}{tta}: test accuracy {preds.accuracy:.4f} (loss {preds.loss:.4f}) "
          f"on {len(preds.y)} {preds.meta['dataset']} test images")  # fmt: skip
    return 0
