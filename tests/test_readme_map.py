"""Both READMEs hold the lesson -> mnistlab map covering every lesson line, and their tables are well formed.

Tables are read with a real Markdown parser (markdown-it-py, GFM tables); the raw rows are checked too,
because a parser quietly pads or drops cells when a row has a stray ``|``.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

READMES = {"README.md": "## From the lesson's code to mnistlab", "README.zh.md": "## 从课程代码到 mnistlab"}

# The lesson's lines that issue 18 asks the map to cover, as they are written in the lesson.
LESSON_LINES = [
    "tf.keras.models.Sequential([",
    "model.compile(",
    "model.fit(",
    "validation_freq=1",
    "model.summary()",
    "ImageDataGenerator(",
    "ModelCheckpoint(",
    "save_best_only=True",
    "np.set_printoptions(threshold=np.inf)",
    "model.trainable_variables",
    "plt.plot(history.history[",
    "application.py",
]
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def tables(readme: str) -> list[tuple[list[str], list[list[str]], list[str]]]:
    """Each table as (header cells, body rows of cells, raw source lines), from markdown-it's tokens."""
    markdown_it = pytest.importorskip("markdown_it")
    text = (ROOT / readme).read_text(encoding="utf-8")
    lines = text.splitlines()
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    out, rows, row, where = [], [], [], None
    for tok in tokens:
        if tok.type == "table_open":
            rows, where = [], tok.map
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and where is not None:
            row.append(tok.content)
        elif tok.type == "tr_close":
            rows.append(row)
        elif tok.type == "table_close":
            out.append((rows[0], rows[1:], lines[where[0] : where[1]]))
            where = None
    return out


def map_table(readme: str) -> list[list[str]]:
    text = (ROOT / readme).read_text(encoding="utf-8")
    heading = READMES[readme]
    assert heading in text.splitlines(), f"{readme}: no section {heading!r}"
    for header, body, raw in tables(readme):
        if "TensorFlow" in header[0] and text.index(raw[0]) > text.index(heading):
            return body
    raise AssertionError(f"{readme}: no lesson -> mnistlab table under {heading!r}")


@pytest.mark.parametrize("readme", READMES)
def test_tables_parse_with_every_row_complete(readme: str) -> None:
    found = tables(readme)
    assert len(found) >= 3
    for header, body, raw in found:
        assert body, f"{readme}: table {header} has no rows"
        width = len(CELL_SPLIT.split(raw[0].strip().strip("|")))
        assert width == len(header)
        for line in raw:
            cells = CELL_SPLIT.split(line.strip().strip("|"))
            assert len(cells) == width, f"{readme}: {len(cells)} cells where the header has {width}: {line}"


@pytest.mark.parametrize("readme", READMES)
def test_map_covers_every_lesson_line(readme: str) -> None:
    rows = map_table(readme)
    lesson_side = [r[0] for r in rows]
    missing = [line for line in LESSON_LINES if not any(line in cell for cell in lesson_side)]
    assert not missing, f"{readme}: the map has no row for {missing}"
    assert all(r[1].strip() for r in rows), f"{readme}: a lesson line without its mnistlab line"
    # The deliberate differences say why: logits instead of a softmax layer, epochs counted from 1 in files.
    sequential = next(r for r in rows if "tf.keras.models.Sequential([" in r[0])
    assert "logits" in sequential[2] and "softmax" in sequential[2]
    assert any("load_weights" in r[0] and "1" in r[2] and "metrics.csv" in r[2] for r in rows)


def test_each_readme_links_to_the_other() -> None:
    assert "(README.zh.md)" in (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ")[0]
    assert "(README.md)" in (ROOT / "README.zh.md").read_text(encoding="utf-8").split("\n## ")[0]


def test_the_chinese_readme_translates_every_section_in_order() -> None:
    # README.zh.md marks each heading with the English one it translates: <!-- en: ## The Python API -->.
    en = re.findall(r"^(#{2,3} .+)$", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    zh = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    marked = re.findall(r"^<!-- en: (#{2,3} .+) -->\n#{2,3} \S", zh, re.M)
    missing = [h for h in en if h not in marked]
    assert not missing, f"README.zh.md has no translation of {missing} (add it under <!-- en: HEADING -->)"
    assert marked == en, "README.zh.md's sections are not in README.md's order"
