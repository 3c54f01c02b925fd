"""The web fixtures (``api``, ``make_api``: a real app per backend) for the fuzz tests."""

from tests.web.conftest import api, make_api

__all__ = ["api", "make_api"]
