"""Shared helpers for the RPC tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def timeout_scale() -> float:
    """Multiply every test timeout by this (env CODER_AGENT_TEST_TIMEOUT_FACTOR) on slow machines."""
    return float(os.environ.get("CODER_AGENT_TEST_TIMEOUT_FACTOR", "1"))
