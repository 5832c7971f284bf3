"""The People and Unnamed views of the web page in headless Chromium against a real server with the photo
library on: name a group of unnamed faces, take a face out, see a person's photos, rename, erase."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import csp_violations, wait_until
from tests.service.helpers import images
from tests.service.server import Server
from tests.service.test_web import TIMEOUT_MS, browser

__all__ = ["browser"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    env = {"FACEREC_PHOTO_LIBRARY": "true", "FACEREC_PHOTO_RECLUSTER_INTERVAL_S": "0"}
    srv = Server(tmp_path_factory.mktemp("web-photos") / "data", env=env).start()
    with httpx.Client(base_url=srv.url, timeout=120.0) as c:
        for person in ("elton_john", "madonna"):
            for path in images(dataset, "train", person)[:8]:
                assert c.post("/v1/photos", files={"image": path.read_bytes()}).status_code == 201
        assert c.post("/v1/clusters/recluster").status_code == 200
    yield srv
    srv.stop()


def test_people_and_unnamed_views(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)

    before = httpx.get(f"{server.url}/v1/clusters", params={"limit": 500}).json()["items"]
    page.click("#tab-unnamed")
    page.wait_for_selector("#unnamed-list .card.cluster img.face[src^='blob:']", timeout=TIMEOUT_MS)
    assert "groups of unnamed faces" in page.inner_text("#unnamed-list")
    first = page.locator("#unnamed-list .card.cluster").first
    size = int(first.locator(".small").inner_text().split()[0])
    assert size >= 6
    first.locator(".who").fill("Reginald")
    first.locator(".name-it").click()
    page.wait_for_selector("#unnamed-result .verdict", timeout=TIMEOUT_MS)
    assert f"Named {size} faces as Reginald" in page.inner_text("#unnamed-result")
    assert page.inner_text("#unnamed-result bdi") == "Reginald"  # the name is direction-isolated in the sentence

    # "not this person" on the remaining group
    page.wait_for_selector("#unnamed-list .card.cluster .not-this", timeout=TIMEOUT_MS)
    page.locator("#unnamed-list .card.cluster .not-this").first.click()
    wait_until(
        page, "document.querySelector('#unnamed-result').innerText.includes('it will stay out')", timeout=TIMEOUT_MS
    )

    page.click("#tab-people")
    card = page.locator("#people-list .card.person", has_text="Reginald")
    card.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_selector("#people-list .card.person img.face[src^='blob:']", timeout=TIMEOUT_MS)
    card.locator("button.photos").click()
    page.wait_for_selector("#person-photos h3", timeout=TIMEOUT_MS)
    assert f"Photos of Reginald ({size})" in page.inner_text("#person-photos")
    assert page.inner_text("#person-photos h3 bdi") == "Reginald"
    card.locator(".rename-input").fill("Reggie")
    card.locator("button.rename").click()
    wait_until(
        page, "document.querySelector('#people-result').innerText.includes('Renamed to Reggie')", timeout=TIMEOUT_MS
    )
    page.screenshot(path=str(server.data.parent / "people.png"))
    card = page.locator("#people-list .card.person", has_text="Reggie")
    card.locator(".erase-photos").check()
    card.locator("button.erase").click()
    wait_until(
        page,
        "document.querySelector('#people-result').innerText.includes('with their faces in photos')",
        timeout=TIMEOUT_MS,
    )
    assert httpx.get(f"{server.url}/v1/subjects").json()["items"] == []
    remaining = httpx.get(f"{server.url}/v1/clusters", params={"limit": 500}).json()
    # the faces named Reginald were erased with him; the others are still there
    assert sum(c["size"] for c in remaining["items"]) == sum(c["size"] for c in before) - size
    assert violations == []  # the page works under its Content Security Policy
    page.close()


def test_erasing_a_person_with_a_double_click(browser: Any, server: Server) -> None:
    cluster = httpx.get(f"{server.url}/v1/clusters").json()["items"][0]["id"]
    named = httpx.post(f"{server.url}/v1/clusters/{cluster}/name", json={"name": "Dora"}, timeout=120.0).json()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-people")
    card = page.locator(f"#people-list .card.person[data-subject='{named['subject_id']}']")
    card.locator("button.photos").click()
    page.wait_for_selector("#person-photos h3", timeout=TIMEOUT_MS)
    assert "Photos of Dora" in page.inner_text("#person-photos")
    card.locator("button.erase").dblclick()
    wait_until(page, "document.querySelector('#people-result').innerText.includes('Erased')", timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the second click's answer, had it been sent
    assert len(deletes) == 1 and "no subject" not in page.inner_text("#people-result")
    # the erased person's photos are no longer shown
    assert page.inner_text("#person-photos") == ""
    page.close()
