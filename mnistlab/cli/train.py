"""``mnistlab train``: train a preset (or your settings) into a run folder; ``--resume`` continues one.

The settings' flags are made from ``TrainConfig``'s schema (mnistlab.config): one flag per field, with its
help, choices and type; only the flags below that say where and how to run are this module's own.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mnistlab.config import PRESETS, TrainConfig, cli_fields, flag, kind
from mnistlab.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a model. Presets: lesson (the course's MLP, Adam, batch 32, 5 epochs, validated on "
        "the test set), fast (same MLP, ≥97.8% in ~1.5 s), best (CNN, ≥99.6%); fast and best hold out "
        "5,000 training images to validate on. Options override the preset.",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="starting settings (default: fast); on fashion_mnist, best trains 7 epochs and best and record train "
        "without augmentation",
    )
    p.add_argument(
        "--config",
        metavar="CONFIG",
        help="start from a run's saved settings (RUN/config.json or RUN) instead of a preset; flags override them",
    )
    for f in cli_fields():
        _add_flag(p, f)
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<model>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN where it stopped")
    p.add_argument("--init-from", metavar="SRC", help="start from these weights only (a run, export, Keras file, .pt)")
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


def _add_flag(p: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    m, k = f.metadata, kind(f)
    in_presets = any(f.name in preset for preset in PRESETS.values())
    default = "from --preset" if in_presets else m["shown"] or _shown(f.default)
    help = f"{m['help']} (default: {default})".replace("%", "%")
    if k is bool:
        p.add_argument(flag(f), action=argparse.BooleanOptionalAction, default=None, help=help)
        return
    parse = _number if k is float else k
    choices = list(m["choices"]) or None
    p.add_argument(flag(f), dest=f.name, type=parse, choices=choices, metavar=m["metavar"], help=help)


def _shown(default: object) -> str:
    if default == "" or default is False:
        return "off"
    return format(default, "g") if isinstance(default, float) else str(default)


def _number(text: str) -> int | float:
    """A float, or an int when written as one (``--val-split 5000`` is a count, ``0.1`` a fraction)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


_number.__name__ = "number"  # argparse names the type in its error: "invalid number value"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config the flags ask for: ``--config``'s or ``--preset``'s settings, then the flags given."""
    given = {f.name: getattr(args, f.name) for f in cli_fields() if getattr(args, f.name) is not None}
    if args.config:
        if args.preset:
            raise ConfigError("give --config or --preset, not both")
        return TrainConfig.read(args.config).replace(**given)
    from mnistlab.config import from_preset

    return from_preset(args.preset or "fast", **given)


def run(args: argparse.Namespace) -> int:
    from mnistlab import distributed
    from mnistlab.runs import train_run

    verbose = 0 if args.quiet else 1
    where = {"nproc": args.nproc, "master_port": args.master_port}
    if args.resume:
        if args.config or args.preset:
            raise ConfigError("--resume continues a run with its own settings; leave out --config and --preset")
        given = {f.name: getattr(args, f.name) for f in cli_fields() if getattr(args, f.name) is not None}
        result = train_run(None, args.resume, resume=True, overrides=given, verbose=verbose, **where)
    else:
        config = config_from_args(args)
        if args.init_from:  # an imported model's run brings its architecture (interop.config_for_init)
            from mnistlab.interop import config_for_init

            given = [f.name for f in cli_fields() if getattr(args, f.name) is not None]
            config = config_for_init(config, args.init_from, explicit=given)
        out = args.out or f"runs/{Path(config.dataset).name}-{config.model}"
        result = train_run(config, out, init_from=args.init_from, force=args.force, verbose=verbose, **where)
    if args.quiet and distributed.is_main():  # under torchrun, every rank runs this command
        print(result["summary"])
    return 0
