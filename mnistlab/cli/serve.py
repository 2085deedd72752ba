"""``mnistlab serve RUN``: the web page (draw or upload a picture) and its JSON API, on localhost."""

from __future__ import annotations

import argparse

from mnistlab.config import KINDS
from mnistlab.errors import ConfigError

THICKEN = {"auto": None, "on": True, "off": False}


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
    p.add_argument("--quiet", action="store_true", help="no access log lines (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from mnistlab.web import serve
    except ImportError as e:
        raise ConfigError(
            f"the web app needs the 'web' extra ({e.name} is missing): pip install 'mnistlab[web]'"
        ) from None

    serve(
        args.run, args.host, args.port, which=args.which, kind=args.kind, thicken=THICKEN[args.thicken],
        max_upload=int(args.max_upload_mb * 1024 * 1024), access_log=not args.quiet,
    )  # fmt: skip
    return 0
