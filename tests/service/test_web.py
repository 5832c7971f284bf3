"""The web page in headless Chromium (Debian's ``chromium`` driven by Playwright) against a real server:
enrol a person, identify photos, verify a pair, read the words on the page and take screenshots."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from embeddings import default_threshold
from embeddings.weights import MODEL_ID
from service.config import Settings
from service.gallery.calibration import load_calibration
from service.gallery.normalisation import load_normalisation
from service.recognition import identify_threshold
from tests.browser import csp_violations, wait_until
from tests.service.helpers import images, png
from tests.service.server import Server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 120_000  # the machine may be busy; each step normally takes well under a second
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a synthetic webcam (a moving test pattern) that needs no permission prompt
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    yield from Server(tmp_path_factory.mktemp("web") / "data").serving()


def run_until(page: Any, panel: str, text: str) -> str:
    """Click the panel's run button, wait until its result shows ``text``; the result's text."""
    page.click(f"#{panel}-run")
    wait_until(page, f"document.querySelector('#{panel}-result').innerText.includes('{text}')", timeout=TIMEOUT_MS)
    text_now: str = page.inner_text(f"#{panel}-result")
    return text_now


def test_enrol_identify_and_verify_in_the_page(browser: Any, server: Server, dataset: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)

    page.click("#tab-enroll")
    page.fill("#enroll-name", "Ben Afflek")
    page.set_input_files("#enroll-files", [str(p) for p in images(dataset, "train", "ben_afflek")[:5]])
    page.click("#enroll-run")
    page.wait_for_selector("#enroll-result .verdict", timeout=TIMEOUT_MS)
    enrolled = page.inner_text("#enroll-result")
    assert "Enrolled" in enrolled and "of Ben Afflek" in enrolled
    assert "Enrolled 0" not in enrolled
    # the same name again adds to the same person
    page.set_input_files("#enroll-files", str(images(dataset, "train", "ben_afflek")[6]))
    page.click("#enroll-run")
    wait_until(
        page,
        "document.querySelector('#enroll-result').innerText.includes('Enrolled 1 photo of')",
        timeout=TIMEOUT_MS,
    )
    subjects = httpx.get(f"{server.url}/v1/subjects").json()["items"]
    assert [s["name"] for s in subjects] == ["Ben Afflek"]
    assert f"now has {subjects[0]['face_count']} enrolled photos" in page.inner_text("#enroll-result")

    page.click("#tab-identify")
    page.set_input_files("#identify-file", str(images(dataset, "val", "ben_afflek")[0]))
    page.click("#identify-run")
    page.wait_for_selector("#identify-result .verdict", timeout=TIMEOUT_MS)
    text = page.inner_text("#identify-result")
    faces = httpx.get(f"{server.url}/v1/subjects").json()["items"][0]["face_count"]
    used = identify_threshold(
        requested=None,
        fixed=default_threshold(),
        max_fir=Settings().max_fir,
        calibration=load_calibration(MODEL_ID),
        subjects=1,
        faces=faces,
        normalisation=load_normalisation(MODEL_ID),
    ).threshold
    assert "Ben Afflek" in text and f"within the threshold {used:.2f}" in text
    width = page.eval_on_selector("#identify-canvas", "c => c.width")
    assert width > 0
    shot = tmp_path / "identify.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.set_input_files("#identify-file", str(images(dataset, "val", "mindy_kaling")[0]))
    assert "above the threshold" in run_until(page, "identify", "unknown")
    page.screenshot(path=str(tmp_path / "unknown.png"), full_page=True)
    # a side view of someone not enrolled: the page says the face is turned
    side = dataset / "train" / "elton_john" / "httpsdfrpwlycscloudfrontnetdeltonjohnjpg.jpg"
    page.set_input_files("#identify-file", str(side))
    assert "a frontal photo is recognised more reliably" in run_until(page, "identify", "the face is turned")

    page.click("#tab-verify")
    ben = images(dataset, "val", "ben_afflek")
    page.set_input_files("#verify-file-a", str(ben[1]))
    page.set_input_files("#verify-file-b", str(ben[2]))
    page.click("#verify-run")
    page.wait_for_selector("#verify-result .verdict", timeout=TIMEOUT_MS)
    assert "Same person" in page.inner_text("#verify-result")
    page.set_input_files("#verify-file-b", str(images(dataset, "val", "madonna")[0]))
    assert "above the threshold" in run_until(page, "verify", "Different people")
    page.screenshot(path=str(tmp_path / "verify.png"), full_page=True)
    print(f"screenshots in {tmp_path}")
    assert violations == []  # the page works under its Content Security Policy
    page.close()


def test_docs_render_without_internet(browser: Any, server: Server) -> None:
    from service.routes.apidocs import local_swagger_ui

    if local_swagger_ui() is None:
        pytest.skip("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN")
    page = browser.new_page()
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.innerText)")
    assert "/v1/identify" in " ".join(paths) and "/v1/subjects/{subject_id}/faces" in " ".join(paths)
    page.close()


def test_webcam_photo(browser: Any, server: Server) -> None:
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click('[data-slot="identify"] .cam')
    wait_until(page, "document.querySelector('#camera-video').videoWidth > 0", timeout=TIMEOUT_MS)
    page.click("#camera-snap")
    page.wait_for_selector("#camera", state="hidden", timeout=TIMEOUT_MS)
    page.click("#identify-run")
    page.wait_for_selector("#identify-result .verdict", timeout=TIMEOUT_MS)
    # the fake camera shows a test pattern: the photo went through the API, which found no face in it
    assert "No face was found" in page.inner_text("#identify-result")
    assert page.eval_on_selector("#identify-canvas", "c => c.width") > 0
    assert violations == []  # the webcam and its snapshot work under the page's Content Security Policy
    context.close()


def overflow(page: Any) -> int:
    """How far the page is wider than the window (a sideways scroll), CSS pixels."""
    wider: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return wider


def test_phone_width_needs_no_sideways_scroll(browser: Any, server: Server, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    for tab in ("identify", "verify", "enroll", "live", "people", "unnamed"):
        page.click(f"#tab-{tab}")
        assert overflow(page) == 0, tab
    long_name = "W" * 200  # no space to break at
    subject = httpx.post(f"{server.url}/v1/subjects", json={"name": long_name}).json()
    try:
        page.click("#tab-people")
        page.locator("#people-list .card.person", has_text=long_name).wait_for(timeout=TIMEOUT_MS)
        assert overflow(page) == 0
        page.click("#tab-enroll")
        page.fill("#enroll-name", long_name)
        no_face = tmp_path / "blank.png"
        no_face.write_bytes(png(200, 200))
        page.set_input_files("#enroll-files", str(no_face))
        assert long_name in run_until(page, "enroll", "Not used")
        assert overflow(page) == 0
    finally:
        httpx.delete(f"{server.url}/v1/subjects/{subject['id']}")
    page.close()


def test_enrolling_no_usable_photo_adds_nobody(browser: Any, server: Server, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-enroll")
    page.fill("#enroll-name", "Nobody Here")
    no_face = tmp_path / "blank.png"
    no_face.write_bytes(png(200, 200))
    page.set_input_files("#enroll-files", str(no_face))
    assert "Nobody Here was not added" in run_until(page, "enroll", "Enrolled 0 photos")
    names = [s["name"] for s in httpx.get(f"{server.url}/v1/subjects").json()["items"]]
    assert "Nobody Here" not in names  # no empty person left behind
    page.close()


def test_page_loads_without_console_errors(browser: Any, server: Server) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    assert errors == []  # e.g. no 404 for /favicon.ico, which browsers ask for when the page names no icon
    page.close()


def accessible_name(page: Any, selector: str) -> str:
    """The name a screen reader announces for the element (Chromium's accessibility tree)."""
    cdp = page.context.new_cdp_session(page)
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"][0]
    cdp.detach()
    return str(ax.get("name", {}).get("value", ""))


def test_photo_pickers_say_which_photo_they_take(browser: Any, server: Server) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    page.click("#tab-verify")
    first, second = accessible_name(page, "#verify-file-a"), accessible_name(page, "#verify-file-b")
    assert "first" in first and "second" in second  # not "Choose File" twice
    page.click("#tab-enroll")
    assert "photos of the person" in accessible_name(page, "#enroll-files")
    page.close()
