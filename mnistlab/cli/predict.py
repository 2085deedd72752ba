"""``mnistlab predict RUN IMAGE...``: what each picture shows, with its probability and the top 3.

Folders stand for the pictures inside them. ``--interactive`` asks for paths in a loop, like the lesson's
app. A picture that cannot be used is reported on stderr and the others still predicted; the exit
code is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from mnistlab.config import KINDS
from mnistlab.errors import ConfigError

THICKEN = {"auto": None, "on": True, "off": False}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="recognise pictures (photos, drawings) with a trained run",
        description="Recognise pictures with a run's model. Each picture is prepared like the data set's "
        "images (for digits: ink bright on dark, cropped, fitted into 20×20, centred by mass in 28×28).",
    )
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="picture files or folders of pictures")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to use (default: best)")
    p.add_argument("--kind", choices=KINDS, help="preprocessing (default: from the run's data set)")
    p.add_argument("--thicken", choices=list(THICKEN), default="auto", help="widen thin pen strokes (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of lines (default: off)")
    p.add_argument("--save-input", metavar="DIR", help="write the 28×28 inputs the model saw as PNGs (default: none)")
    p.add_argument("--interactive", action="store_true", help="ask for picture paths in a loop (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.predict import Predictor, interactive, predict_images, printable

    if not args.images and not args.interactive:
        raise ConfigError("give IMAGE paths or folders, or --interactive")
    options = {"which": args.which, "kind": args.kind, "thicken": THICKEN[args.thicken]}
    if args.interactive:
        interactive(Predictor(args.run, **options), save_input=args.save_input)
        return 0
    predictions = predict_images(args.run, args.images, save_input=args.save_input, errors="keep", **options)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    for p in predictions:
        if p.ok and not args.json:
            print(p.line())
        elif not p.ok:
            print(f"mnistlab: error: {printable(p.source)}: {printable(p.error)}", file=sys.stderr)
    return 0 if all(p.ok for p in predictions) else 2
