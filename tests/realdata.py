"""Where the real driving-sensor samples live, and a skip helper for tests that need them.

The data sit next to the checkout, at ``<repo>/../shared/data/real`` (see its README.md for provenance and
formats). They are never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO_ROOT / "../shared/data/real").resolve()


def require_real_data(*parts: str) -> Path:
    """Path ``REAL_DATA/<parts...>``; skips the calling test when it does not exist."""
    p = REAL_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (expected <repo>/../shared/data/real, see its README.md)")
    return p
