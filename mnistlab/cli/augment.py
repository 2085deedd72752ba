"""``mnistlab augment preview``: see what an ``--augment`` setting does before training with it."""

from __future__ import annotations

import argparse

from mnistlab.config import SPEC_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("augment", help="look at data augmentation settings")
    asub = p.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    q = asub.add_parser(
        "preview",
        help="save a grid of images and augmented versions of each as PNG",
        description="One row per image: the original, then augmented versions, as training would see them.",
    )
    q.add_argument(
        "--augment",
        default="rotation=45,shift=0.15,zoom=0.5",
        help=f"{SPEC_HELP} (default: rotation=45,shift=0.15,zoom=0.5, the lesson's)",
    )
    q.add_argument("--dataset", default="mnist", help="data set name or path (default: mnist)")
    q.add_argument(
        "--split", choices=("train", "test"), default="train", help="split to take images from (default: train)"
    )
    q.add_argument("--count", type=int, default=8, help="number of images, one per row (default: 8)")
    q.add_argument("--versions", type=int, default=6, help="augmented versions per image (default: 6)")
    q.add_argument("--seed", type=int, default=0, help="picks the images and the augmentations (default: 0)")
    q.add_argument("-o", "--output", default="preview.png", help="PNG file to write (default: preview.png)")
    q.add_argument("--force", action="store_true", help="replace -o even if mnistlab did not write it (default: off)")
    q.set_defaults(func=cmd_preview)


def cmd_preview(args: argparse.Namespace) -> int:
    from mnistlab.plots import preview_augment

    path = preview_augment(
        args.augment,
        args.output,
        dataset=args.dataset,
        count=args.count,
        versions=args.versions,
        seed=args.seed,
        split=args.split,
        force=args.force,
    )
    print(f"wrote {path} ({args.count} images x {args.versions} augmented versions)")
    return 0
