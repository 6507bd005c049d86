"""Test set-up: the fixture modules of ``tests/fixtures`` are loaded as plugins.

Each subject has one module there (real data, synthetic plates, videos, random-weights
SAM 2, the command line, masks, the test environment). ``from conftest import
need_shared`` keeps working for the tests that use it; new code imports from
``fixtures.data``.
"""

from __future__ import annotations

import pytest

# before the imports below: the fixture modules' asserts get pytest's messages
pytest.register_assert_rewrite("fixtures")

from fixtures.data import REPO, REQUIRE_DATA_ENV, SHARED_DATA, need_shared  # noqa: E402
from fixtures.videos import ArrayVideoStub  # noqa: E402

pytest_plugins = [
    "fixtures.data",
    "fixtures.env",
    "fixtures.plates",
    "fixtures.sam2",
    "fixtures.videos",
]

__all__ = ["REPO", "REQUIRE_DATA_ENV", "SHARED_DATA", "ArrayVideoStub", "need_shared"]
