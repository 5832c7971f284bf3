"""The 5-celebrity set fixture, shared with the service tests."""

from tests.service.conftest import dataset

__all__ = ["dataset"]
