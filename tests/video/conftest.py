"""Fixtures of the video tests: the 5-celebrity set (shared with the service tests)."""

from tests.service.conftest import dataset

__all__ = ["dataset"]
