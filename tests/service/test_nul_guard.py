"""Where :func:`service.nul_guard.find_nul` says a NUL is (the place a 422 names), and that request models refuse it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.nul_guard import find_nul
from service.schemas import SubjectCreate


@pytest.mark.parametrize(
    ("value", "place"),
    [
        ("a\x00", "value"),
        ({"name": "x", "metadata": {"k": ["ok", "a\x00b"]}}, "metadata.k[1]"),
        ({"metadata": {"k\x00": 1}}, "metadata key 'k\\x00'"),
        ([{"a": "\x00"}], "[0].a"),
        ({"name": "x", "metadata": {"k": ["ok", 1, None, 2.5]}}, None),
    ],
)
def test_find_nul_names_the_place(value: object, place: str | None) -> None:
    assert find_nul(value) == place


def test_request_models_refuse_nul_and_accept_other_control_characters() -> None:
    with pytest.raises(ValidationError, match=r"metadata\.a must not contain a NUL character"):
        SubjectCreate.model_validate({"name": "x", "metadata": {"a": "\x00"}})
    assert SubjectCreate.model_validate({"name": "tab\tand\x01", "metadata": {}}).name == "tab\tand\x01"


def test_find_nul_walks_any_depth_without_recursion() -> None:
    deep: object = "a\x00"
    for _ in range(5000):
        deep = {"a": [deep]}
    place = find_nul(deep)
    assert place is not None and place.startswith("a[0].a[0]") and place.count("[0]") == 5000
