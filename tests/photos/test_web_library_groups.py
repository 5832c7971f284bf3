"""The Unnamed view's group edits in headless Chromium against a real server with the photo library on: merging
two groups ("Same person as…"), which later regroupings keep, and "Regroup now"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import csp_violations, wait_until
from tests.service.helpers import images
from tests.service.server import Server
from tests.service.test_web import TIMEOUT_MS, browser, overflow

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


def test_merging_two_groups_on_a_phone_and_regrouping_keeps_them(browser: Any, library: Library) -> None:
    server = library.server
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        cluster_of = clusters_of_faces(c)
    # each person's largest group: two groups of different people
    a, b = (
        Counter(g for f, g in cluster_of.items() if library.person_of.get(f) == p).most_common(1)[0][0] for p in PEOPLE
    )
    assert a != b
    merged = {f for f, g in cluster_of.items() if g in (a, b)}
    size_a = sum(1 for g in cluster_of.values() if g == a)

    page, violations = open_unnamed(browser, server, 375)
    card_a = page.locator(f"#unnamed-list .card.cluster[data-cluster='{a}']")
    card_b = page.locator(f"#unnamed-list .card.cluster[data-cluster='{b}']")
    assert card_a.locator("button.merge").inner_text() == "Same person as…"
    card_a.locator("button.merge").press("Enter")  # keyboard reachable
    result_says(page, "Same as the chosen group")
    assert card_a.locator("button.merge").inner_text() == "Cancel"
    label = card_b.locator("button.merge").get_attribute("aria-label")
    assert label is not None and "same person as the chosen group" in label
    assert overflow(page) == 0  # no sideways scroll at phone width, while choosing either

    dialogs: list[str] = []

    def confirm(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)
    card_b.locator("button.merge").dblclick()
    result_says(page, f"one group of {len(merged)} faces")
    assert len(dialogs) == 1 and f"{size_a} and {len(merged) - size_a} faces" in dialogs[0]
    page.wait_for_selector(f"#unnamed-list .card.cluster[data-cluster='{b}']", state="detached", timeout=TIMEOUT_MS)
    assert f"{len(merged)} faces" in card_a.inner_text()
    assert overflow(page) == 0

    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        assert c.post("/v1/clusters/recluster").status_code == 200
        cluster_of = clusters_of_faces(c)
        assert len({cluster_of[f] for f in merged}) == 1  # the merged faces are still one group
        face = next(iter(merged))
        group = cluster_of[face]
        # a face taken out makes a group of its own, which is then named elsewhere while the page shows it
        alone = c.delete(f"/v1/clusters/{group}/faces/{face}").json()["cluster_id"]

    page.click("#tab-unnamed")
    card_alone = page.locator(f"#unnamed-list .card.cluster[data-cluster='{alone}']")
    card_alone.wait_for(timeout=TIMEOUT_MS)
    page.locator(f"#unnamed-list .card.cluster[data-cluster='{group}'] button.merge").click()
    assert httpx.post(f"{server.url}/v1/clusters/{alone}/name", json={"name": "Ada"}, timeout=120.0).is_success
    card_alone.locator("button.merge").click()
    result_says(page, "no longer there")  # the server's 404, readably
    card_alone.wait_for(state="detached", timeout=TIMEOUT_MS)  # and the list is up to date
    assert violations == []
    page.close()


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
