"""The proposals list API makes a fixed number of queries whatever the number of rows (proposals
without approvals used to cost one count each)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


def _queries(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/api/v1/proposals").status_code == 200
    return len(captured.captured_queries)


def test_the_list_costs_the_same_queries_for_two_rows_or_eight(agent, reviewer):
    client = APIClient()
    client.force_authenticate(reviewer)
    for _ in range(2):
        reviewable_proposal(agent=agent, runs=1)
    small = _queries(client)
    for _ in range(6):
        reviewable_proposal(agent=agent, runs=1)
    assert len(client.get("/api/v1/proposals").json()["results"]) == 8
    assert _queries(client) == small
