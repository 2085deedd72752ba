"""``mnistlab import-keras FILE -o RUN``: a Keras model (.keras, .weights.h5, the lesson's weights text) as a run."""

from __future__ import annotations

import argparse

from mnistlab.interop.keras_files import PIXELS, SUPPORTED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-keras",
        help="bring a Keras model in as a run folder (.keras, .weights.h5, the lesson's weights .txt)",
        description="Import a Keras Sequential model as a run folder that evaluate, predict, serve, export, "
        f"report, plot and train --init-from take, without training. Layers: {SUPPORTED}. A final softmax is "
        "folded into the output, so the probabilities are Keras's. TensorFlow is not needed; HDF5 files need "
        "h5py (pip install 'mnistlab[keras]').",
    )
    p.add_argument("file", help="x.keras (model.save), x.weights.h5 (model.save_weights) or the lesson's weights.txt")
    p.add_argument("-o", "--out", required=True, help="run folder to write")
    p.add_argument(
        "--model",
        metavar="FILE",
        help="architecture for a .weights.h5 or text file: a .keras file or the JSON of model.to_json() "
        "(default: inferred from the weight shapes, for Dense-only models)",
    )
    p.add_argument("--dataset", default="mnist", help="data set the model was trained on (default: mnist)")
    p.add_argument("--data-dir", help="folder holding the data set's files (looked at first)")
    p.add_argument(
        "--pixels",
        choices=PIXELS,
        default="auto",
        help="what the Keras model was fed: 0-1 (x / 255, as in the lesson) or 0-255; auto takes 0-255 when the "
        "first layer is a Rescaling that scales down (default: auto)",
    )
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.interop import import_keras

    import_keras(args.file, args.out, model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                 pixels=args.pixels, force=args.force, verbose=0 if args.quiet else 1)  # fmt: skip
    return 0
