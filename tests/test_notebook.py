"""docs/tour.ipynb: shipped with its outputs, and it still runs top to bottom against today's code."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tour.ipynb"


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def test_the_notebook_is_shipped_with_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs for c in code[1:])  # every cell after the imports shows something
    assert not outputs(nb, "error")


def test_the_notebook_runs_top_to_bottom(real_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_DATA", str(real_mnist))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not outputs(nb, "error")
    images = [o for o in outputs(nb, "display_data") + outputs(nb, "execute_result") if "image/png" in o.data]
    assert len(images) >= 5  # digits, curves, confusion matrix, mistakes, the photo read
    text = "".join(o.text for o in outputs(nb, "stream"))
    assert "test accuracy" in text
    read_line = next(line for line in text.splitlines() if line.startswith("read:"))
    read, written = read_line.split()[1], read_line.split()[3]
    assert len(read) == len(written) == 4 and sum(a == b for a, b in zip(read, written)) >= 3
    assert (tmp_path / "runs" / "tour" / "report.html").is_file()
