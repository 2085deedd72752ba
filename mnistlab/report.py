"""One self-contained HTML page for a run: config, model, final metrics, curves, confusion matrix,
mistakes and per-class accuracy.

Every picture is embedded as a ``data:`` PNG and the page loads nothing else: its Content-Security-Policy
forbids any fetch, so it opens the same from a mail attachment, a USB stick or a machine with no network.

>>> write_report("runs/main", "report.html")               # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab import fileio
from mnistlab.analysis import Predictions, load_history, predict_run
from mnistlab.errors import ConfigError
from mnistlab.metrics import ACC, KEYS, History
from mnistlab.plots import figure_png, plot_confusion, plot_history, plot_mistakes, plot_per_class
from mnistlab.runfolder import RunFolder

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; } .warn { background: #fff3cd; padding: 0.5em 1em; }
table { border-collapse: collapse; margin: 0.5em 0; max-width: 100%; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
@media (max-width: 600px) { body { margin: 0.5em auto; font-size: 14px; } td, th { padding: 0.2em 0.4em; } }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.5em 0; } img { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 13px; }
"""
NAMES = {
    "loss": "training loss",
    ACC: "training accuracy",
    "val_loss": "validation loss",
    f"val_{ACC}": "validation accuracy",
}


def write_report(
    run: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    which: str = "best",
    mistakes: int = 24,
    force: bool = False,
) -> Path:
    """Write the report of a run folder (or checkpoint file) as one HTML file; return its path.

    Never replaces a file mnistlab did not write (a checkpoint, a page of yours) unless ``force``.
    """
    path = fileio.check_new_output(path, (".html", ".htm"), force=force)
    page = render_report(run, which=which, mistakes=mistakes)
    try:
        fileio.write_text(path, page)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def render_report(run: str | os.PathLike[str], *, which: str = "best", mistakes: int = 24) -> str:
    """The report as an HTML string."""
    if mistakes < 1:
        raise ConfigError(f"number of mistakes to show must be ≥ 1, got {mistakes}")
    rf = RunFolder(run)
    history = load_history(rf)  # first: a folder that is not a run, or has no epoch yet, gets a clear error
    loaded = rf.load(which)
    preds = predict_run(rf, which)
    folder = rf.folder if rf.file is None else None  # a checkpoint file alone: no folder files
    config = rf.config(which).to_dict()
    result = (rf.result() if folder else None) or {}
    model_summary = rf.summary_text() if folder else None
    if model_summary is None:
        from mnistlab.models import summary

        model_summary = summary(loaded.model, loaded.in_shape)
    name = (folder or Path(run)).resolve().name
    ckpt_epoch = loaded.meta.get("epoch")
    dataset = preds.meta.get("dataset") or config.get("dataset", "?")
    sub = f"{dataset} · {config.get('model', '?')} · {len(history.epoch)} epochs · checkpoint {loaded.path.name}"

    parts = [
        f"<h1>Run {_e(name)}</h1>",
        f'<p class="sub">{_e(sub)} · mnistlab {_e(str(loaded.meta.get("mnistlab_version", "?")))}</p>',
    ]
    imported = loaded.meta.get("imported")
    if imported:
        parts.append(f'<p class="warn">Imported from {_e(str(imported.get("from")))} ({_e(str(imported.get("format")))}) '
                     "by mnistlab import-keras: the model was not trained here, so there is no training history.</p>")  # fmt: skip
    if not preds.meta.get("same_data", True):
        parts.append('<p class="warn">The data set on disk differs from the one this run was trained on; '
                     "the test figures below use the data set as it is now.</p>")  # fmt: skip
    parts += [
        "<h2>Final metrics</h2>",
        _table(_metrics_rows(history, preds, result, loaded.path.name, ckpt_epoch)),
        "<h2>Training curves</h2>",
        _img(figure_png(plot_history(run)), "Training and validation accuracy and loss per epoch"),
        "<h2>Per-class accuracy</h2>",
        _img(figure_png(plot_per_class(preds)), "Accuracy of each class on the test split"),
        _per_class_table(preds),
        "<h2>Confusion matrix</h2>",
        _img(figure_png(plot_confusion(preds)), "Confusion matrix on the test split, counts and row-normalised"),
        "<h2>Most confident mistakes</h2>",
        _img(figure_png(plot_mistakes(preds, n=mistakes)), f"The {mistakes} most confident wrong predictions"),
        "<h2>Metrics per epoch</h2>",
        _epoch_table(history),
        "<h2>Config</h2>",
        _table([(k, json.dumps(v)) for k, v in sorted(config.items())]),
        "<h2>Model</h2>",
        f"<pre>{_e(model_summary.rstrip())}</pre>",
    ]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>mnistlab run {_e(name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _metrics_rows(h: History, p: Predictions, result: dict, ckpt_name: str, ckpt_epoch: Any) -> list[tuple[str, str]]:
    wrong = int((p.pred != p.y).sum())
    at = f", after epoch {ckpt_epoch}" if ckpt_epoch else ""
    rows = [
        (f"test accuracy ({ckpt_name}{at})", f"{p.accuracy:.4f}  (loss {p.loss:.4f}; {wrong:,} wrong of {len(p.y):,})"),
    ]
    test = result.get("test") or {}
    if ACC in test:
        rows.append(
            (
                "test accuracy (final weights, result.json)",
                f"{test[ACC]:.4f}  (loss {test.get('loss', float('nan')):.4f})",
            )
        )
    last = h.epoch[-1] + 1 if h.epoch else 0
    for key in KEYS:
        if h.history.get(key):
            rows.append(
                (
                    f"{NAMES[key]}, epoch {last if not key.startswith('val_') else h.val_epoch[-1] + 1}",
                    f"{h.history[key][-1]:.4f}",
                )
            )
    if h.best.get("epoch"):
        b = h.best
        rows.append(
            (
                "best epoch",
                f"{b['epoch']}  ({b.get('monitor', '?')} = {b.get('value', float('nan')):.4f}, {b.get('mode', '')})",
            )
        )
    rows.append(("epochs trained", str(len(h.epoch))))
    if h.resumed_at:
        rows.append(("resumed after epochs", ", ".join(f"{r:g}" for r in h.resumed_at)))
    if "train_time_s" in result:
        rows.append(("training time", f"{result['train_time_s']:.2f} s on {result.get('device', '?')}"))
    return rows


def _per_class_table(p: Predictions) -> str:
    cm = p.confusion()
    acc = p.per_class_accuracy()
    rows = []
    for c, name in enumerate(p.class_names):
        off = cm[c].copy()
        off[c] = 0
        confused = f"{p.class_names[int(off.argmax())]} ({int(off.max())})" if off.max() else "—"
        a = "n/a" if np.isnan(acc[c]) else f"{acc[c]:.2%}"
        rows.append(f"<tr><td>{_e(name)}</td><td class=num>{int(cm[c].sum()):,}</td><td class=num>{int(cm[c, c]):,}</td>"
                    f"<td class=num>{a}</td><td>{_e(confused)}</td></tr>")  # fmt: skip
    head = "<tr><th>class</th><th>test images</th><th>correct</th><th>accuracy</th><th>most often taken for</th></tr>"
    return f"<div class=scroll><table>{head}{''.join(rows)}</table></div>"


def _epoch_table(h: History) -> str:
    keys = [k for k in KEYS if k in h.history]
    head = "<tr><th>epoch</th>" + "".join(f"<th>{_e(NAMES[k])}</th>" for k in keys) + "</tr>"
    rows = []
    for i, ep in enumerate(h.epoch):
        cells = []
        for k in keys:
            j = (
                h.val_epoch.index(ep)
                if k.startswith("val_") and ep in h.val_epoch
                else (None if k.startswith("val_") else i)
            )
            cells.append(f"<td class=num>{h.history[k][j]:.4f}</td>" if j is not None else "<td></td>")
        mark = " ★" if h.best.get("epoch") == ep + 1 else ""
        rows.append(f"<tr><td>{ep + 1}{mark}</td>{''.join(cells)}</tr>")
    return f"<div class=scroll><table>{head}{''.join(rows)}</table></div>"


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<div class=scroll><table>{cells}</table></div>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></figure>'


def _e(s: str) -> str:
    return html.escape(s, quote=True)
