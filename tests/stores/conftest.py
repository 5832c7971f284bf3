"""The store contract tests' fixtures (see tests/storefixtures.py)."""

from tests.storefixtures import media_stores

__all__ = ["media_stores"]
