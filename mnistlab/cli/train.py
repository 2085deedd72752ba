"""``mnistlab train``: train a preset (or your settings) into a run folder; ``--resume`` continues one."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlab.config import MODEL_NAMES, OPTIMIZERS, PRESETS, SCHEDULES, SPEC_HELP, from_preset

# CLI flag → config field, for flags that override the preset when given.
FIELDS = ("dataset", "data_dir", "model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
          "schedule", "warmup", "label_smoothing", "augment", "seed", "device", "threads", "validation_freq",
          "save_every", "limit_train", "limit_test", "width", "precision")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a model. Presets: lesson (the course's MLP, Adam, batch 32, 5 epochs), "
        "fast (same MLP, ≥97.8% in ~1.5 s), best (CNN, ≥99.6%). Options override the preset.",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="fast",
        help="starting settings (default: fast); best on fashion_mnist trains 7 epochs without augmentation",
    )
    p.add_argument("--dataset", help="mnist, fashion_mnist, or a data set path (default: mnist)")
    p.add_argument("--data-dir", help="folder holding the data set's IDX files (looked at first)")
    p.add_argument("--model", choices=MODEL_NAMES, help="model preset (default: from --preset)")
    p.add_argument("--width", type=int, help="hidden units (mlp) or base channels (cnn)")
    p.add_argument("--epochs", type=int, help="total epochs to reach, also when resuming (default: from --preset)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: from --preset)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default: adam)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: from --preset)")
    p.add_argument("--momentum", type=float, help="momentum for sgd/rmsprop (default: 0.9)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: 0)")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default: from --preset)")
    p.add_argument("--warmup", type=float, help="one-cycle warm-up fraction (default: 0.25)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing (default: 0)")
    p.add_argument(
        "--augment",
        help=f"augment training batches, e.g. rotation=45,shift=0.15,zoom=0.5,shear=0,flip=none; {SPEC_HELP}. "
        "See it first with `mnistlab augment preview` (default: none)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="bf16 runs convolutions and matmuls in bfloat16 under autocast (fast on CPUs with AMX/AVX-512 "
        "and on GPUs); weights stay float32 (default: from --preset)",
    )
    p.add_argument("--seed", type=int, help="random seed; the same seed gives the same numbers (default: 0)")
    p.add_argument("--device", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, help="torch threads, 0 = torch's choice (default: 0)")
    p.add_argument("--validation-freq", type=int, help="validate every N epochs (default: 1)")
    p.add_argument("--save-every", type=int, help="also save 'last' every N steps (default: 0, per epoch only)")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (default: all)")
    p.add_argument("--limit-test", type=int, help="use only the first N test images (default: all)")
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<model>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN where it stopped")
    p.add_argument("--init-from", metavar="CKPT", help="start from these weights only (run folder, .safetensors, .pt)")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train data-parallel in N processes on this machine, as torchrun --nproc-per-node=N does; "
        "for several machines run torchrun itself (see the README) (default: 1)",
    )
    p.add_argument(
        "--master-port", type=int, metavar="PORT", help="port the --nproc processes meet on (default: a free one)"
    )
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab import distributed
    from mnistlab.runs import train_run

    given = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
    verbose = 0 if args.quiet else 1
    where = {"nproc": args.nproc, "master_port": args.master_port}
    if args.resume:
        result = train_run(None, args.resume, resume=True, overrides=given, verbose=verbose, **where)
    else:
        config = from_preset(args.preset, **given)
        out = args.out or f"runs/{Path(config.dataset).name}-{config.model}"
        result = train_run(config, out, init_from=args.init_from, force=args.force, verbose=verbose, **where)
    if args.quiet and distributed.is_main():  # under torchrun, every rank runs this command
        print(result["summary"])
    return 0
