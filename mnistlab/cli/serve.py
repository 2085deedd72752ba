"""``mnistlab serve RUN``: the web page (draw or upload a picture) and its JSON API, on localhost."""

from __future__ import annotations

import argparse
import math

from mnistlab.config import KINDS
from mnistlab.errors import ConfigError

THICKEN = {"auto": None, "on": True, "off": False}
MAX_UPLOAD_MB = 1024  # a body is held in memory while it is checked


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a web page to draw or upload pictures and see the run's predictions",
        description="Serve the page and the JSON API (POST /api/predict, GET /api/model, GET /healthz) with "
        "uvicorn. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to the network (default: 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to use (default: best)")
    p.add_argument("--kind", choices=KINDS, help="preprocessing (default: from the run's data set)")
    p.add_argument("--thicken", choices=list(THICKEN), default="auto", help="widen thin pen strokes (default: auto)")
    p.add_argument("--max-upload-mb", type=float, default=4.0, help="largest accepted upload in MB (default: 4)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the Host header may give besides localhost and --host, e.g. the machine's DNS name "
        "(repeatable; default: none)",
    )
    p.add_argument("--max-decodes", type=int, help="pictures decoded and predicted at once (default: one per CPU core)")
    p.add_argument(
        "--body-timeout", type=float, default=30.0, help="seconds a request body may take to arrive (default: 30)"
    )
    p.add_argument("--quiet", action="store_true", help="no access log lines (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    mb = args.max_upload_mb
    if not (math.isfinite(mb) and 0 < mb <= MAX_UPLOAD_MB):
        raise ConfigError(f"--max-upload-mb must be a number in (0, {MAX_UPLOAD_MB}], got {mb}")
    if not (math.isfinite(args.body_timeout) and args.body_timeout > 0):
        raise ConfigError(f"--body-timeout must be a positive number of seconds, got {args.body_timeout}")
    if args.max_decodes is not None and args.max_decodes < 1:
        raise ConfigError(f"--max-decodes must be ≥ 1, got {args.max_decodes}")
    try:
        from mnistlab.web import serve
    except ImportError as e:
        raise ConfigError(
            f"the web app needs the 'web' extra ({e.name} is missing): pip install 'mnistlab[web]'"
        ) from None

    serve(
        args.run, args.host, args.port, which=args.which, kind=args.kind, thicken=THICKEN[args.thicken],
        max_upload=max(1, int(mb * 1024 * 1024)), access_log=not args.quiet, max_decodes=args.max_decodes,
        allow_hosts=args.allow_host, body_timeout=args.body_timeout,
    )  # fmt: skip
    return 0
