"""The People and Unnamed views of the web page in headless Chromium against a real server with the photo
library on: name a group of unnamed faces, take a face out, see a person's photos, rename, erase, export a person's
data."""

from __future__ import annotations

import json
import zipfile
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


def test_exporting_a_persons_data(browser: Any, server: Server, dataset: Path, tmp_path: Path) -> None:
    name = "Zoë <i>Export</i> & co"  # escaped in the card and in the sentence, exported as it is
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        subject = c.post("/v1/subjects", json={"name": name}).json()
        files = [("images", p.read_bytes()) for p in images(dataset, "train", "madonna")[:2]]
        faces = c.post(f"/v1/subjects/{subject['id']}/faces", files=files).json()["faces"]
    assert len(faces) == 2
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    exports: list[Any] = []
    page.on("request", lambda r: exports.append(r) if r.url.endswith("/export") else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.fill("#api-key", "key-typed-in-the-page")  # sent with the export (the server on loopback has no keys)
    page.click("#tab-people")
    card = page.locator(f"#people-list .card.person[data-subject='{subject['id']}']")
    card.wait_for(timeout=TIMEOUT_MS)
    assert card.locator("button.export").count() == 1, "no Export data button on the person's card"
    assert card.locator("button.export").inner_text() == "Export data"

    with page.expect_download(timeout=TIMEOUT_MS) as downloading:
        card.locator("button.export").click()
    download = downloading.value
    assert download.suggested_filename == f"subject-{subject['id']}.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(saved) as z:
        exported = json.loads(z.read("subject.json"))
        crops = [n for n in z.namelist() if n.startswith("faces/") and n.endswith(".png")]
    assert exported["id"] == subject["id"] and exported["name"] == name
    assert len(crops) == 2
    assert [r.headers.get("x-api-key") for r in exports] == ["key-typed-in-the-page"]
    wait_until(page, "document.querySelector('#people-result').innerText.includes('Downloaded')", timeout=TIMEOUT_MS)
    said = page.inner_text("#people-result")
    kb = round(saved.stat().st_size / 1024)
    assert f"Downloaded subject-{subject['id']}.zip ({kb} KB)" in said, said
    assert page.inner_text("#people-result bdi") == name
    assert card.locator("button.export").is_enabled()
    # the file name other Content-Disposition forms give; none at all: the page's own subject-<id>.zip
    names = page.evaluate(
        r"""["attachment; filename=plain.zip", 'attachment; filename="a \\"b\\".zip"',
            "attachment; filename*=UTF-8''Zo%C3%AB.zip; filename=\"x.zip\"", null].map(attachmentName)"""
    )
    assert names == ["plain.zip", 'a "b".zip', "Zoë.zip", ""]

    # erased meanwhile: the API's message in the card's output, one request for a double click
    assert httpx.delete(f"{server.url}/v1/subjects/{subject['id']}", timeout=120.0).status_code == 204
    refused = httpx.get(f"{server.url}/v1/subjects/{subject['id']}/export", timeout=120.0)
    assert refused.status_code == 404
    message = refused.json()["error"]["message"]
    exports.clear()
    card.locator("button.export").dblclick()
    wait_until(page, "document.querySelector('#people-result .error') !== null", timeout=TIMEOUT_MS)
    assert page.inner_text("#people-result") == message
    page.wait_for_timeout(1000)  # the second click's request, had it been sent
    assert len(exports) == 1
    assert violations == []  # the download works under the page's Content Security Policy
    page.close()
