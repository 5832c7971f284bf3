"""Names on the web page in headless Chromium against a real server: a right-to-left name with digits is
direction-isolated wherever it is shown in a sentence (``<bdi>``, or ``dir="auto"`` on an element holding only the
name), and a name label drawn on a photo stays inside the canvas however long the name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import csp_violations, wait_until
from tests.service.helpers import images, png
from tests.service.server import Server
from tests.service.test_web import TIMEOUT_MS, browser, run_until

__all__ = ["browser"]

pytestmark = pytest.mark.slow

ARABIC = "مريم 23"  # a name that starts right-to-left and ends with digits
HEBREW = "שרה 7"

# The text nodes under `root` that hold `name` without being isolated: neither in a <bdi> nor in an element whose
# direction is dir="auto" (the name and only the name, as the page writes them).
UNISOLATED = """([root, name]) => {
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
  const bad = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.data.includes(name)) continue;
    const iso = n.parentElement.closest("bdi, [dir=auto]");
    if (!iso || iso.textContent.trim() !== name) bad.push(n.parentElement.outerHTML);
  }
  return bad;
}"""


def isolated(page: Any, root: str, name: str) -> bool:
    """``name`` is shown under ``root``, and every time direction-isolated."""
    shown: bool = page.evaluate("([r, n]) => document.querySelector(r).textContent.includes(n)", [root, name])
    bad: list[str] = page.evaluate(UNISOLATED, [root, name])
    assert bad == [], bad
    return shown


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    yield from Server(tmp_path_factory.mktemp("web-names") / "data").serving()


def test_right_to_left_names_are_isolated_in_sentences(browser: Any, server: Server, dataset: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    ben = images(dataset, "train", "ben_afflek")

    page.click("#tab-enroll")
    page.fill("#enroll-name", ARABIC)
    page.set_input_files("#enroll-files", [str(ben[0]), str(ben[1])])
    assert "Enrolled 2 photos of" in run_until(page, "enroll", "now has")
    assert isolated(page, "#enroll-result", ARABIC)
    assert page.eval_on_selector_all("#enroll-result bdi", "els => els.map(e => e.textContent)") == [ARABIC] * 2

    page.click("#tab-identify")
    page.set_input_files("#identify-file", str(images(dataset, "val", "ben_afflek")[0]))
    assert ARABIC in run_until(page, "identify", "within the threshold")
    assert isolated(page, "#identify-result", ARABIC)

    page.click("#tab-people")
    card = page.locator("#people-list .card.person", has_text=ARABIC)
    card.wait_for(timeout=TIMEOUT_MS)
    card.locator("img.face[src^='blob:']").wait_for(timeout=TIMEOUT_MS)  # an enrolled face: no photo library needed
    assert isolated(page, "#people-list", ARABIC)
    assert card.locator(".name").get_attribute("dir") == "auto"
    assert card.locator(".rename-input").get_attribute("dir") == "auto"
    card.locator(".rename-input").fill(HEBREW)
    card.locator("button.rename").click()
    wait_until(page, "document.querySelector('#people-result').innerText.includes('Renamed to')", TIMEOUT_MS)
    assert isolated(page, "#people-result", HEBREW)
    page.locator("#people-list .card.person", has_text=HEBREW).wait_for(timeout=TIMEOUT_MS)
    assert isolated(page, "#people-list", HEBREW)
    assert page.evaluate("bidi('<img src=x>&')") == "<bdi>&lt;img src=x&gt;&amp;</bdi>"  # still escaped
    assert violations == []
    page.close()


FIT = """([text, x, width, pad]) => {
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = "bold 20px system-ui, sans-serif";
  const fit = fitLabel(ctx, text, x, width, pad);
  return { ...fit, full: ctx.measureText(fit.text).width + 2 * pad };
}"""


def test_fit_label_keeps_the_box_inside_the_canvas(browser: Any, server: Server) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    for name in ("W" * 200, "محمد " * 40, "Ada Lovelace", "😀" * 80):
        for x in (0, 150, 290):
            fit = page.evaluate(FIT, [name, x, 300, 4])
            assert fit["x"] >= 0 and fit["x"] + fit["width"] <= 300, fit
            assert fit["full"] <= fit["width"] + 0.01, fit  # the text drawn fits its box
            if name == "Ada Lovelace":  # fits: whole, moved left only as far as the edge needs
                assert fit["text"] == name and (fit["x"] == x or fit["x"] + fit["width"] == 300), fit
            else:  # cut: a prefix of the name, ending in an ellipsis
                assert fit["text"].endswith("…") and name.startswith(fit["text"][:-1]) and len(fit["text"]) > 1, fit
    page.close()


def test_a_long_name_drawn_on_a_photo_stays_inside_it(browser: Any, server: Server, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(320, 240))
    page.set_input_files("#identify-file", str(photo))
    wait_until(page, "photos.identify && photos.identify[0].img !== null", TIMEOUT_MS)
    marks = [
        {"box": {"x": 280, "y": 100, "width": 30, "height": 40}, "label": "W" * 200, "color": "#1a7f37"},
        {"box": {"x": 300, "y": 200, "width": 20, "height": 40}, "label": "Ada", "color": "#b35900"},
        {"box": {"x": 5, "y": 5, "width": 30, "height": 230}, "label": ARABIC * 20, "color": "#b35900"},
    ]
    labels = page.evaluate("marks => draw('identify', marks)", marks)
    assert len(labels) == 3
    for label in labels:
        assert label["x"] >= 0 and label["x"] + label["width"] <= 320, label
        assert label["y"] >= 0 and label["y"] + label["height"] <= 240, label
    assert labels[0]["text"].endswith("…") and labels[1]["text"] == "Ada"
    page.close()
