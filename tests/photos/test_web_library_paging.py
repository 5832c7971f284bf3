"""The People and Unnamed views of the web page with more people and groups than one page holds, against a server
whose rate limit a view that asks for every person's face at once would exceed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import csp_violations, wait_until
from tests.service.helpers import images
from tests.service.server import Server
from tests.service.test_web import TIMEOUT_MS, browser

__all__ = ["browser"]

pytestmark = pytest.mark.slow

PEOPLE = 60  # more than the page lists at once (48) and than the burst the rate limit allows (20)


def call(c: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request that waits out the server's 429s."""
    while (r := c.request(method, path, **kwargs)).status_code == 429:
        time.sleep(float(r.headers.get("Retry-After", "1")))
    return r


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[Server]:
    env = {
        "FACEREC_PHOTO_LIBRARY": "true",
        "FACEREC_PHOTO_RECLUSTER_INTERVAL_S": "0",
        "FACEREC_RATE_LIMIT_BURST": "20",
    }
    srv = Server(tmp_path_factory.mktemp("web-paging") / "data", env=env).start()
    with httpx.Client(base_url=srv.url, timeout=120.0) as c:
        for i in range(PEOPLE):
            assert call(c, "POST", "/v1/subjects", json={"name": f"Person {i:02d}"}).status_code == 201
        for path in images(dataset, "train", "elton_john")[:4]:
            assert call(c, "POST", "/v1/photos", files={"image": path.read_bytes()}).status_code == 201
        assert call(c, "POST", "/v1/clusters/recluster").status_code == 200
        cluster = call(c, "GET", "/v1/clusters").json()["items"][0]["id"]
        # the last person created, so on the second page
        assert call(c, "POST", f"/v1/clusters/{cluster}/name", json={"name": "Elton"}).status_code == 200
    yield srv
    srv.stop()


def call_json(server: Server, path: str) -> Any:
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        return call(c, "GET", path).json()


def card_count(page: Any) -> int:
    count: int = page.eval_on_selector_all("#people-list .card.person", "cards => cards.length")
    return count


def test_people_are_listed_a_page_at_a_time_with_their_faces(browser: Any, server: Server) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    asked: list[str] = []  # the API paths the People view asks for
    page.on("request", lambda r: asked.append(urlsplit(r.url).path) if "/v1/" in r.url else None)
    page.click("#tab-people")
    page.wait_for_selector("#people-more:not([hidden])", timeout=TIMEOUT_MS)
    assert card_count(page) == 48
    assert "Person 00" in page.inner_text("#people-list")
    page.click("#people-more")
    page.wait_for_selector("#people-list .card.person img.face[src^='blob:']", timeout=TIMEOUT_MS)
    assert card_count(page) == PEOPLE + 1
    assert page.is_hidden("#people-more")
    assert "Elton" in page.inner_text("#people-list") and "too many requests" not in page.inner_text("#people")
    # one listing a page and one crop a person with a face (the listing names it): nothing asked per person
    elton = next(s for s in call_json(server, "/v1/subjects?limit=500")["items"] if s["name"] == "Elton")
    assert asked == ["/v1/subjects", "/v1/subjects", f"/v1/faces/{elton['sample_face_id']}/crop"], asked
    # opening the tab twice in a row lists each person once
    page.click("#tab-people")
    page.click("#tab-people")
    page.wait_for_selector("#people-more:not([hidden])", timeout=TIMEOUT_MS)
    time.sleep(0.5)
    assert card_count(page) == 48
    assert violations == []
    page.close()


def test_groups_are_listed_a_page_at_a_time(browser: Any, server: Server, dataset: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        photos = [
            p for person in ("madonna", "mindy_kaling", "jerry_seinfeld") for p in images(dataset, "train", person)
        ]
        for path in photos[:52]:
            call(c, "POST", "/v1/photos", files={"image": path.read_bytes()})
        assert call(c, "POST", "/v1/clusters/recluster").status_code == 200
        while (listed := call(c, "GET", "/v1/clusters", params={"limit": 500}).json())["total"] <= 48:
            group = next(g for g in listed["items"] if g["size"] > 1)  # "not this person" makes one more group
            face = group["sample_face_ids"][0]
            assert call(c, "DELETE", f"/v1/clusters/{group['id']}/faces/{face}").status_code == 200
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations = csp_violations(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#status.ready", timeout=TIMEOUT_MS)
    page.click("#tab-unnamed")
    page.wait_for_selector("#unnamed-more:not([hidden])", timeout=TIMEOUT_MS)
    page.click("#unnamed-more")
    groups = f"document.querySelectorAll('#unnamed-list .card.cluster').length === {listed['total']}"
    wait_until(page, groups, TIMEOUT_MS)
    assert page.is_hidden("#unnamed-more")
    assert violations == []
    page.close()
