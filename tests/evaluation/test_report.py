"""The report renders one list of blocks as markdown and as a self-contained HTML page."""
import numpy as np
from PIL import Image

from cxr_fast.evaluation import report


def test_markdown_and_html(tmp_path):
    image = tmp_path / "fig.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    blocks = [("h1", "Title"), ("warn", "leaky <split>"), ("p", "text"),
              ("table", ["metric", "value"], [["auc", 0.91234], ["f1", None]]), ("img", str(image), "a figure")]
    md_path, html_path = report.write(blocks, str(tmp_path), "T")
    markdown = open(md_path).read()
    assert "# Title" in markdown and "| auc | 0.912 |" in markdown and "| f1 | n/a |" in markdown
    assert "![a figure](fig.png)" in markdown and "> **Warning:** leaky <split>" in markdown
    page = open(html_path).read()
    assert "data:image/png;base64," in page and "&lt;split&gt;" in page and "<td>0.912</td>" in page


def test_reference_numbers_are_the_documented_ones():
    assert report.REFERENCE_RESULTS["paper"]["accuracy"] == 0.963
    assert report.REFERENCE_RESULTS["report model 1"]["auc"] == 0.990
    assert report.REFERENCE_RESULTS["report model 2"]["recall"] == 0.93
