""":func:`source_key`: which URLs name one camera (so that it is not added twice), parsed as the stream URL
validation parses them."""

from __future__ import annotations

import pytest

from service.routes.streams import StreamCreate
from service.streams.source import source_key

SAME = [
    ("rtsp://admin:secret@10.0.0.7/stream1", "rtsp://10.0.0.7:554/stream1"),
    ("rtsp://door:pw@Cam.Example.COM:554/s", "RTSP://viewer@cam.example.com/s"),
    ("rtsps://cam/s", "rtsps://cam:322/s"),
    ("http://cam/video.mjpg", "http://u:p@cam:80/video.mjpg"),
    ("https://cam", "https://cam:443/"),
    ("rtsp://[FE80::1]/s", "rtsp://[fe80::1]:554/s"),
    ("0", "/dev/video0"),
    ("00", "/dev/video0"),
]
OTHERS = [
    ("rtsp://cam/stream1", "rtsp://cam/Stream1"),  # paths as written
    ("rtsp://cam/s", "rtsp://cam:8554/s"),
    ("rtsp://cam/s", "rtsps://cam/s"),
    ("rtsp://cam/s", "rtsp://cam/s?channel=2"),
    ("http://cam/s", "https://cam/s"),
    ("0", "1"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_urls_of_one_camera_have_one_key(a: str, b: str) -> None:
    for url in (a, b):
        assert StreamCreate(name="x", url=url).url == url  # accepted, stored as written
    assert source_key(a) == source_key(b)


@pytest.mark.parametrize(("a", "b"), OTHERS)
def test_urls_of_other_cameras_have_other_keys(a: str, b: str) -> None:
    assert source_key(a) != source_key(b)


def test_the_key_holds_no_credentials_and_a_stored_url_that_does_not_parse_is_its_own() -> None:
    assert "secret" not in source_key("rtsp://admin:secret@cam/s")
    assert source_key("rtsp://h:99999/x") == "rtsp://h:99999/x"  # stored before ports were checked
