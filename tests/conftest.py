"""Shared fixtures: the real data in ../shared/data, skipped (or required in CI) when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeq.paths import shared_data_dir


def _require_shared() -> bool:
    return os.environ.get("EDGEQ_REQUIRE_SHARED_DATA", "") not in ("", "0")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI (EDGEQ_REQUIRE_SHARED_DATA=1) a missing shared data folder is an error."""
    if _require_shared() and not shared_data_dir().is_dir():
        raise pytest.UsageError(
            f"EDGEQ_REQUIRE_SHARED_DATA is set but {shared_data_dir()} does not exist; "
            "set EDGEQ_SHARED_DATA to the shared data folder"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads the shared data (through the ``shared_data`` fixture, also
    indirectly) with ``shared_data``, so ``-m "not shared_data"`` selects the others."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests using it are skipped with a reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set EDGEQ_SHARED_DATA)")
    return path
