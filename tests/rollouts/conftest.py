"""Rollout test fixtures.

Most rollout tests exercise stage mechanics (routing, approvals, halts, pages) and start rollouts
with small or zero minimum runs so a stage can advance at once. The canary floor — a stage's
minimum runs is at least REVERIE_CANARY_MIN_SAMPLE, checked at start and at approval — has its
own tests (test_stage_floor.py), which override this fixture to keep the real floor.
"""

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def stage_floor(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("rollouts.services.minimum_stage_runs", lambda: 0)
