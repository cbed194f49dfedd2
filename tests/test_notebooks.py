"""The chapter notebooks: each committed .ipynb is its jupytext .py source run top to bottom in
one kernel, with its outputs kept. (`make test` also runs every .ipynb afresh with nbmake.)"""

import re

import jupytext
import nbformat
import pytest

from tests.conftest import ROOT

FOLDER = ROOT / "notebooks"
SOURCES = sorted(FOLDER.glob("[0-9][0-9]_*.py"))


def test_one_notebook_per_chapter():
    assert [p.stem[:2] for p in SOURCES] == [f"{i:02d}" for i in range(1, 10)]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_ipynb_is_its_source_run_top_to_bottom(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing: run `make notebooks`"
    nb = nbformat.read(ipynb, as_version=4)
    cells = lambda book: [(c.cell_type, c.source) for c in book.cells]
    assert cells(nb) == cells(jupytext.read(source)), f"{ipynb.name} is stale: `make notebooks`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    shown = source.read_text().count("plt.show()") + source.read_text().count("\nImage(")
    assert len(figures) == shown > 0  # pyplot's, and PNGs the library wrote
    opening = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and re.search(
        r"[Mm]irrors (chapter|appendix)|[Bb]eyond the book", opening
    )


def test_the_readme_links_every_notebook_under_learn():
    readme = (ROOT / "README.md").read_text()
    learn = readme.split("\n## Learn", 1)[1].split("\n## ", 1)[0]
    for source in SOURCES:
        assert f"(notebooks/{source.stem}.ipynb)" in learn, source.stem
