"""``mnistlab data``: list where data sets are found, import, download or build them, look at them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mnistlab.config import FITS, MAX_PIXELS
from mnistlab.datasets.specs import SPECS
from mnistlab.errors import DatasetError

# A grid of more images is unreadable, and drawing each as a subplot takes seconds per hundred.
MAX_GRID = 400


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, import, download, build and look at data sets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    q = dsub.add_parser("list", help="where each data set is looked for, in order, and what is there")
    q.add_argument("--data-dir", help="an explicit folder, looked at first")
    q.set_defaults(func=cmd_list)

    q = dsub.add_parser("import", help="verify a folder of IDX files or a Keras .npz, copy it into the data home")
    q.add_argument("name", choices=list(SPECS), help="data set name")
    q.add_argument("path", help="folder with the four IDX files (gzipped or not), or a Keras-style .npz")
    q.set_defaults(func=cmd_import)

    q = dsub.add_parser("download", help="download a data set into the data home from its mirrors")
    q.add_argument("name", choices=list(SPECS), help="data set name")
    q.add_argument(
        "--mirror", action="append", help="base URL to try (repeatable; default: built-in list or $MNISTLAB_MIRRORS)"
    )
    q.add_argument("--timeout", type=float, default=30.0, help="seconds per connection (default: 30)")
    q.set_defaults(func=cmd_download)

    q = dsub.add_parser(
        "build",
        help="build a data set from your own images (list file + folder, class folders, or CSV)",
        description="Build a data set folder from your own images. SRC is a list file of 'file_name label' lines "
        "beside a folder of the same name (the course layout), a folder holding a train and a test pair of those, "
        "a folder of class sub-folders (or train/ and test/ holding them), or a CSV of path,label rows. "
        "Every bad entry is reported as file:line: reason; by default any bad entry fails the build and nothing "
        "is written.",
    )
    q.add_argument("src", help="list file, CSV file, or folder (see above)")
    q.add_argument("-o", "--output", required=True, help="data set folder to write")
    q.add_argument("--test", help="a separate test source of the same kinds (default: the test pair found in SRC)")
    q.add_argument(
        "--split", type=float, help="hold out this fraction of each class as the test part, e.g. 0.1 (default: none)"
    )
    q.add_argument(
        "--classes",
        help="text file of class names, one per line in label order; labels may then be names (default: folder "
        "names, or the integer labels)",
    )
    q.add_argument("--size", default="28x28", help="image size, N or WIDTHxHEIGHT (default: 28x28)")
    q.add_argument("--rgb", action="store_true", help="keep colour: images (N, H, W, 3) (default: grayscale)")
    q.add_argument(
        "--invert",
        action="store_true",
        help="invert the pixels, e.g. dark digits on white paper → MNIST's white on black (default: off)",
    )
    q.add_argument(
        "--fit",
        choices=FITS,
        default="stretch",
        help="stretch to the size, or pad: keep the aspect ratio and fill the rest with the border colour "
        "(default: stretch)",
    )
    q.add_argument(
        "--skip-bad", action="store_true", help="build from the good entries and report the bad (default: off)"
    )
    q.add_argument("--workers", type=int, default=0, help="decoding processes, 0 = one per CPU core (default: 0)")
    q.add_argument("--seed", type=int, default=0, help="seed of the --split draw (default: 0)")
    q.add_argument("--name", help="data set name (default: the output folder's name)")
    q.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse larger images, as possible decompression bombs (default: {MAX_PIXELS})",
    )
    q.add_argument("--force", action="store_true", help="replace a data set built earlier in --output (default: off)")
    q.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    q.set_defaults(func=cmd_build)

    q = dsub.add_parser("show", help="print one image as the lesson does (the 28x28 array) and its label")
    q.add_argument("name", help="data set name or path")
    q.add_argument("--index", type=int, default=0, help="image index (default: 0)")
    q.add_argument("--split", choices=("train", "test"), default="train", help="split (default: train)")
    q.set_defaults(func=cmd_show)

    q = dsub.add_parser("grid", help="save a labelled grid of sample images as PNG")
    q.add_argument("name", help="data set name or path")
    q.add_argument("-o", "--output", default="grid.png", help="PNG file to write (default: grid.png)")
    q.add_argument("--count", type=int, default=40, help=f"number of images, at most {MAX_GRID} (default: 40)")
    q.add_argument("--split", choices=("train", "test"), default="train", help="split (default: train)")
    q.add_argument("--seed", type=int, default=None, help="pick random images with this seed (default: the first ones)")
    q.add_argument("--force", action="store_true", help="replace -o even if mnistlab did not write it (default: off)")
    q.set_defaults(func=cmd_grid)


def cmd_list(args: argparse.Namespace) -> int:
    from mnistlab.datasets.store import data_home, describe_locations

    print(f"data home: {data_home()}  (set MNISTLAB_HOME to move it)")
    for spec in SPECS.values():
        print(f"{spec.name}: {spec.title}")
        for i, row in enumerate(describe_locations(spec, args.data_dir), 1):
            print(f"  {i}. {row['kind']:<9} {row['path']}  [{row['state']}]")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mnistlab.datasets.store import import_dataset

    dest = import_dataset(args.name, args.path)
    print(f"imported {args.name} from {args.path} into {dest} (content verified)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mnistlab.datasets import download as dl
    from mnistlab.datasets.specs import get_spec
    from mnistlab.datasets.store import data_home

    spec = get_spec(args.name)
    assert spec is not None
    dest = data_home() / spec.name
    dl.download(spec, dest, mirrors=args.mirror, timeout=args.timeout, progress=True)
    print(f"{spec.name}: files verified in {dest}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from mnistlab.datasets.build import build_dataset

    result = build_dataset(
        args.src,
        args.output,
        test=args.test,
        split=args.split,
        classes=args.classes,
        size=args.size,
        color="rgb" if args.rgb else "gray",
        invert=args.invert,
        fit=args.fit,
        skip_bad=args.skip_bad,
        workers=args.workers or None,
        seed=args.seed,
        name=args.name,
        force=args.force,
        max_pixels=args.max_pixels,
        progress=not args.quiet,
    )
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    if result.bad:
        print(f"skipped {len(result.bad)} bad entries (also in {result.path / 'skipped.txt'}):")
        print(result.report())
    return 0


def _split(name: str, split: str) -> tuple[Any, Any, tuple[str, ...]]:
    from mnistlab.datasets.store import load

    ds = load(name)
    return (ds.x_train, ds.y_train, ds.class_names) if split == "train" else (ds.x_test, ds.y_test, ds.class_names)


def cmd_show(args: argparse.Namespace) -> int:
    import numpy as np

    x, y, names = _split(args.name, args.split)
    if not -len(x) <= args.index < len(x):
        raise DatasetError(f"--index {args.index} out of range: the {args.split} split has {len(x)} images")
    with np.printoptions(linewidth=200, threshold=10**6):
        print(np.asarray(x[args.index]))
    label = int(y[args.index])
    print(f"label: {label} ({names[label]})" if names[label] != str(label) else f"label: {label}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    import numpy as np

    if not 1 <= args.count <= MAX_GRID:
        raise DatasetError(f"--count must lie in 1..{MAX_GRID}, got {args.count}")
    from mnistlab.plots import check_output

    check_output(Path(args.output), force=args.force)
    x, y, names = _split(args.name, args.split)
    count = min(args.count, len(x))
    if args.seed is None:
        idx = np.arange(count)
    else:
        idx = np.sort(np.random.default_rng(args.seed).choice(len(x), count, replace=False))
    titles = [f"#{i}: {names[int(y[i])]}" for i in idx]
    from mnistlab.plots import image_grid

    path = image_grid(np.asarray(x[idx]), titles, args.output, title=f"{args.name} ({args.split})", force=args.force)
    print(f"wrote {path} ({count} images)")
    return 0
