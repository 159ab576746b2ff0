"""`parsim report`: the committed example reports exist and their PNGs are real plots;
the renderers produce Markdown and self-contained HTML."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from parsim.report.markdown import to_html, to_markdown

REPORTS = ROOT / "reports"
SHIPPED = ["gpt3-175b-1024-a100", "llama3-70b-64-h100"]
FIGURES = ["breakdown.png", "memory.png", "timeline.png", "scaling.png", "pareto.png"]


@pytest.mark.parametrize("name", SHIPPED)
def test_committed_reports_hold_every_section(name):
    md = (REPORTS / name / "report.md").read_text()
    for heading in ("## Scenario", "## Prediction", "## Where the time goes", "## Memory per device",
                    "## Pipeline timeline", "## Strong scaling", "## Top layouts", "## Pareto frontier"):
        assert heading in md, heading
    html = (REPORTS / name / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("png", FIGURES)
def test_report_images_are_real_plots(name, png):
    """Each PNG decodes, is a sensible size, and is not blank: many distinct colours and
    a good share of non-background pixels."""
    with Image.open(REPORTS / name / png) as im:
        im.verify()
    with Image.open(REPORTS / name / png) as im:
        pixels = np.asarray(im.convert("RGB"))
    h, w, _ = pixels.shape
    assert w >= 400 and h >= 150
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20
    background = (pixels == 255).all(axis=2).mean()
    assert 0.02 < 1 - background < 0.95


def test_markdown_and_html_renderers(tmp_path):
    from parsim.report import plots
    plots.scaling([{"gpus": 8, "step_time_s": 2.0, "mfu": 0.5}, {"gpus": 16, "step_time_s": 1.1,
                   "mfu": 0.45}], tmp_path / "s.png")
    blocks = [("h", 1, "T"), ("p", "a < b"), ("table", ["x", "y"], [(1, 2)]),
              ("img", "s.png", "scaling")]
    md = to_markdown(blocks)
    assert "# T" in md and "| x | y |" in md and "| 1 | 2 |" in md and "![scaling](s.png)" in md
    html = to_html(blocks, tmp_path, "T")
    assert "a &lt; b" in html and "data:image/png;base64," in html
