"""The HTML QC reports: self-contained (checked by parsing) and loaded by a headless Chromium.

The browser test drives the system Chromium through Playwright (its own browser
download needs the internet). CI installs Chromium (.ci/run); elsewhere the test
is skipped, with the reason, only when no Chromium is installed.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path
from string import Template
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from browser import headless_page
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)

from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.qc.page import Html, render, table, write_page
from mri2mri.runtime.qc.registration import write_registration_report
from mri2mri.runtime.qc.synthesis import unit_section
from mri2mri.runtime.synthesis.batch import synthesize_dataset
from mri2mri.runtime.synthesis.cli_run import main as run_main


class _Resources(HTMLParser):
    """Every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append((tag, value))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthesis run's participant page and index, one subject's page (`mri2mri-run --input
    ... --report`) and a registration page."""
    d = tmp_path_factory.mktemp("qc")
    bids = d / "bids"
    for i in range(2):
        anat = bids / f"sub-0{i + 1}" / "anat"
        anat.mkdir(parents=True)
        nib.save(nifti(volume((20, 23, 9), seed=i)), anat / f"sub-0{i + 1}_T1w.nii.gz")
    model = channel_picker(d / "t1_to_t2.onnx", ["T1w"], "T2w")
    synthesize_dataset(model, bids, d / "out", device="cpu", command="mri2mri-run test")
    with pytest.raises(SystemExit) as done:
        run_main(["--model", str(model), "--input", f"T1w={bids}/sub-01/anat/sub-01_T1w.nii.gz",
                  "--output", str(d / "sub-01_T2w.nii.gz"), "--device", "cpu", "--report"])
    assert done.value.code in (0, None)
    static = nifti(volume((20, 23, 9), seed=5))
    shifted = np.eye(4)
    shifted[:3, 3] = [3.0, -2.0, 1.5]
    moving = nib.Nifti1Image(np.asarray(static.dataobj), shifted @ static.affine)
    page = write_registration_report(d / "reg.html", moving, static, resample_to(static, static),
                                     params={"moving": "t1.nii.gz", "static": "b0.nii.gz"},
                                     seconds={"registration": 1.0})
    return {"participant": d / "out" / "sub-01.html", "index": d / "out" / "index.html",
            "single": d / "sub-01_T2w_report.html", "registration": page}


def test_reports_are_self_contained(reports: dict[str, Path]) -> None:
    for name, path in reports.items():
        parser = _Resources()
        parser.feed(path.read_text())
        images = [v for tag, v in parser.links if tag == "img"]
        assert images or name == "index", name
        for uri in images:
            assert uri.startswith("data:image/png;base64,"), (name, uri[:40])
            assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        others = [v for tag, v in parser.links if tag != "img"]
        assert all(v.endswith(".html") and "/" not in v for v in others), (name, others)
    participant = reports["participant"].read_text()
    assert "Model card" in participant and "input T1w: sub-01_T1w.nii.gz" in participant
    assert "synthesized T2w" in participant and "not checked" in participant
    assert 'href="sub-02.html"' in reports["index"].read_text()
    single = reports["single"].read_text()
    assert "input T1w: sub-01_T1w.nii.gz" in single and "Model card" in single
    assert "synthesized T2w: sub-01_T2w.nii.gz" in single and "<h2>Run</h2>" in single


def test_reports_load_in_a_headless_browser(reports: dict[str, Path]) -> None:
    problems: list[str] = []
    with headless_page(problems) as page:
        for path in reports.values():
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.evaluate("Array.from(document.images).map(i => i.complete ? "
                                  "i.naturalWidth : 0)")
            assert all(w > 0 for w in sizes), (path.name, sizes)
        page.goto(reports["registration"].as_uri())
        animations = page.evaluate("Array.from(document.querySelectorAll('.flicker img.top'))"
                                   ".map(i => getComputedStyle(i).animationName)")
        assert animations == ["flick", "flick"]
        for name in ("participant", "single"):
            page.goto(reports[name].as_uri())
            assert page.locator("h2", has_text="Model card").count() == 1, name
            assert page.locator("h2", has_text="Run").count() == 1, name
            assert page.locator("figcaption", has_text="synthesized T2w").count() == 1, name
        page.goto(reports["index"].as_uri())
        page.click('a[href="sub-02.html"]')
        page.wait_for_load_state("load")
        assert page.url.endswith("/sub-02.html") and "sub-02" in page.title()
    assert problems == []


def test_templates_escape_values_but_not_markup(tmp_path: Path) -> None:
    """A name in a page is text, whatever it holds; rendered fragments are inserted as markup."""
    assert render(Template("<p>$a$b</p>"), a="<i>'&\"", b=Html("<b>x</b>")) == \
        "<p>&lt;i&gt;&#x27;&amp;&quot;<b>x</b></p>"
    assert table({"<k>": 1.5, "n": None}) == \
        "<table><tr><th>&lt;k&gt;</th><td>1.5</td></tr><tr><th>n</th><td>None</td></tr></table>"
    failed = SimpleNamespace(label="sub-01_<script>", participant="sub-01", status="failed",
                             error="bad & worse", output=tmp_path / "x.nii.gz", inputs={})
    assert unit_section(failed, None) == ('<h2>sub-01_&lt;script&gt;</h2>'
                                          '<p class="fail">failed: bad &amp; worse</p>')
    page = write_page(tmp_path / "p.html", "a <title>", unit_section(failed, None))
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and text.endswith("</html>\n")
    assert "<title>a &lt;title&gt;</title>" in text and "<h1>a &lt;title&gt;</h1>" in text
    assert "<script>" not in text and "<h2>sub-01_&lt;script&gt;</h2>" in text


def test_model_card_says_whether_the_network_beats_the_lut() -> None:
    from mri2mri.runtime.qc.synthesis import _network_vs_lut

    worse = _network_vs_lut({"model": {"psnr": 18.0, "ssim": 0.80},
                             "lut_baseline": {"psnr": 19.5, "ssim": 0.85}})
    assert worse[0][1].startswith("PSNR -1.50 dB, SSIM -0.050") and "prefer it" in worse[0][1]
    better = _network_vs_lut({"model": {"psnr": 22.0, "ssim": 0.90},
                              "lut_baseline": {"psnr": 19.5, "ssim": 0.85}})
    assert "+2.50 dB" in better[0][1] and "network beats" in better[0][1]
    assert _network_vs_lut({"model": {"psnr": 22.0}}) == []
