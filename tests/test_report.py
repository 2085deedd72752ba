"""The one-page HTML report: self-contained, complete, and shown by a real headless browser."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.report import write_report
from tests.helpers import run_cli

SECTIONS = ["Final metrics", "Training curves", "Per-class accuracy", "Confusion matrix", "Most confident mistakes",
            "Metrics per epoch", "Config", "Model"]  # fmt: skip


class Page(HTMLParser):
    """What a browser would fetch (every src/href) and the page's headings."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


@pytest.fixture(scope="module")
def report(small_run: Path, tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Path:
    """The report as a user makes it: ``mnistlab report RUN -o out/run.html`` (through ``mnistlab.cli.main``)."""
    cwd = tmp_path_factory.mktemp("report")
    r = run_cli(
        "report",
        str(small_run),
        "-o",
        "out/run.html",
        "--mistakes",
        "12",
        cwd=cwd,
        env={"MNISTLAB_HOME": str(session_home)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote out/run.html (") and "open it in a browser" in r.stdout
    return cwd / "out" / "run.html"


def test_report_is_one_self_contained_page(report: Path, small_run: Path) -> None:
    text = report.read_text()
    page = Page(text)
    assert page.headings == SECTIONS
    assert "script" not in page.tags and "link" not in page.tags  # nothing to run, nothing to fetch
    assert [t for t, _, _ in page.refs] == ["img"] * 4
    for _, _, src in page.refs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))) as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 250
            assert np.asarray(im.convert("L"), dtype=np.float64).std() > 10  # not blank
    assert "default-src 'none'" in text  # the browser itself refuses any fetch
    assert 50_000 < report.stat().st_size < 3_000_000


def test_report_holds_config_model_and_metrics(report: Path, small_run: Path) -> None:
    text = report.read_text()
    result = json.loads((small_run / "result.json").read_text())
    history = json.loads((small_run / "history.json").read_text())
    assert "Total params: 101,770" in text  # the model summary
    assert "<th>limit_train</th><td>5000</td>" in text and "<th>preset</th><td>&quot;fast&quot;</td>" in text
    assert f"{result['test']['sparse_categorical_accuracy']:.4f}" in text
    for v in history["history"]["val_loss"]:
        assert f"{v:.4f}" in text  # the per-epoch table
    assert f"<td>{history['best']['epoch']} ★</td>" in text


def _images_state(browser) -> list[list]:
    return browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])"
    )


def test_report_opens_in_a_real_browser(report: Path, browser, tmp_path: Path) -> None:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(report.as_uri())
    assert browser.find_element("tag name", "h1").text.startswith("Run ")
    images = _images_state(browser)
    assert len(images) == 4
    for complete, width, height, alt in images:
        assert complete and width >= 500 and height >= 250, alt
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    # The same checks do catch a broken page: one picture's bytes damaged, one fetch from the network.
    broken = tmp_path / "broken.html"
    text = report.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    broken.write_text(text.replace("</body>", '<img src="http://127.0.0.1:9/x.png"></body>'))
    browser.get(broken.as_uri())
    assert sum(1 for _, width, _, _ in _images_state(browser) if width == 0) == 2
    assert any("Content Security Policy" in e["message"] for e in browser.get_log("browser"))


def test_report_from_a_checkpoint_file(small_run: Path, tmp_path: Path) -> None:
    # A checkpoint alone (mailed, copied) carries its config and history.
    page = write_report(small_run / "best.safetensors", tmp_path / "r.html", mistakes=4).read_text()
    assert Page(page).headings == SECTIONS and "Total params: 101,770" in page


def test_report_bad_input(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no finished epoch yet"):
        write_report(fresh, tmp_path / "r.html")
    with pytest.raises(ConfigError, match="is a folder"):
        write_report(fresh, tmp_path)
    with pytest.raises(ConfigError, match="mistakes to show must be ≥ 1"):
        write_report(fresh, tmp_path / "r.html", mistakes=0)
    assert not (tmp_path / "r.html").exists()


def test_cli_report_bad_input(tmp_path: Path) -> None:
    r = run_cli("report", "nowhere", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        2,
        "",
        "mnistlab: error: nowhere: no such run folder or checkpoint file\n",
    )
    assert list(tmp_path.iterdir()) == []
