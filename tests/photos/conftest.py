"""The 5-celebrity set fixture, shared with the service tests."""

from tests.service.conftest import dataset
from tests.storefixtures import media_stores

__all__ = ["dataset", "media_stores"]
