"""``mnistlab export RUN``: the run's weights as exact text (the lesson's weights.txt), npz, safetensors or ONNX."""

from __future__ import annotations

import argparse

from mnistlab.export.formats import FORMATS, LAYOUTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's weights (txt, npz, safetensors, onnx)",
        description="Write a run's network so it runs anywhere: txt (every value at full float32 precision, "
        "readable back), npz, safetensors (the same tensors, binary) or onnx. Each file is first run by its "
        "reader (NumPy or onnxruntime) on test images and compared with PyTorch.",
    )
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--format", choices=FORMATS, default="txt", help="file format (default: txt)")
    p.add_argument("-o", "--output", help="output file or folder (default: RUN/weights.<format>, RUN/model.onnx)")
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="pytorch",
        help="tensor names and shapes: pytorch (Linear weight (out, in)) or keras (dense/kernel (in, out)) "
        "(default: pytorch)",
    )
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export (default: best)")
    p.add_argument("--check-images", type=int, default=1000, help="test images for the parity check (default: 1000)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check (default: check)")
    p.add_argument("--force", action="store_true", help="replace -o even if mnistlab did not write it (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.export.core import export_run

    path = export_run(
        args.run, args.format, args.output, args.layout, which=args.which,
        check=not args.no_check, check_images=args.check_images, force=args.force,
    )  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
