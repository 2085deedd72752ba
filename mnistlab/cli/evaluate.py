"""``mnistlab evaluate RUN``: loss, accuracy and per-class accuracy on the test split."""

from __future__ import annotations

import argparse
import json

from mnistlab.metrics import ACC


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint on the test split")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to use (default: best)")
    p.add_argument("--dataset", help="score on this data set's test split instead of the run's (default: the run's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.runs import evaluate_run

    r = evaluate_run(args.run, args.which, args.dataset)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"{r['checkpoint']}: test loss {r['loss']:.4f}, accuracy {r[ACC]:.4f} on {r['n']} images; "
        f"chosen by {r['chosen_by']}"
    )
    for name, acc in r["per_class"].items():
        print(f"  {name:>12}: {acc:.4f}")
    return 0
