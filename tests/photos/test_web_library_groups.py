"""The Unnamed view's group edits in headless Chromium against a real server with the photo library on:
"Regroup now"."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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

PEOPLE = ("elton_john", "madonna")


@dataclass
class Library:
    server: Server
    person_of: dict[int, str]  # face id -> whose photo it is in


@pytest.fixture(scope="module")
def library(browser: Any, tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Library]:
    env = {"FACEREC_PHOTO_LIBRARY": "true", "FACEREC_PHOTO_RECLUSTER_INTERVAL_S": "0"}
    lib = Library(Server(tmp_path_factory.mktemp("web-groups") / "data", env=env).start(), {})
    with httpx.Client(base_url=lib.server.url, timeout=120.0) as c:
        for person in PEOPLE:
            for path in images(dataset, "train", person)[:6]:
                r = c.post("/v1/photos", files={"image": path.read_bytes()})
                assert r.status_code == 201
                lib.person_of.update({f["id"]: person for f in r.json()["faces"]})
        assert c.post("/v1/clusters/recluster").status_code == 200
    yield lib
    lib.server.stop()


def clusters_of_faces(c: httpx.Client) -> dict[int, int]:
    """Face id -> its cluster, for every unnamed face."""
    listed = c.get("/v1/clusters", params={"limit": 500}).json()["items"]
    return {f["id"]: g["id"] for g in listed for f in c.get(f"/v1/clusters/{g['id']}").json()["faces"]}


def open_unnamed(browser: Any, server: Server, width: int) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-unnamed")
    page.wait_for_selector("#unnamed-list .card.cluster img.face[src^='blob:']", timeout=TIMEOUT_MS)
    return page, violations


def result_says(page: Any, text: str) -> None:
    wait_until(page, f"document.querySelector('#unnamed-result').innerText.includes({text!r})", TIMEOUT_MS)


def test_regroup_now_with_a_double_click_regroups_once(browser: Any, library: Library) -> None:
    page, violations = open_unnamed(browser, library.server, 1280)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.url.endswith("/v1/clusters/recluster") else None)
    page.dblclick("#unnamed-recluster")
    result_says(page, "Regrouped")
    page.wait_for_timeout(1000)  # the second click's request, had it been sent
    assert len(posts) == 1 and "Regrouped" in page.inner_text("#unnamed-result")
    assert page.is_enabled("#unnamed-recluster")
    assert violations == []
    page.close()
