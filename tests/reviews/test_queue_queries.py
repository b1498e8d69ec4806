"""The queue and proposal pages make the same number of queries whatever the data size."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


def _count(client, url: str, **kwargs) -> int:
    client.get(url, **kwargs)  # warm up: the first request after login also touches the session
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_queue_query_count_is_constant(client, reviewer, agent, django_assert_num_queries):
    flag = [{"code": "growth", "message": "long"}]
    reviewable_proposal(agent=agent, runs=1, patterns=1, flags=flag)
    client.force_login(reviewer)
    small = _count(client, "/")
    small_filtered = _count(client, "/?flag=growth&sort=agent")
    for _ in range(6):
        reviewable_proposal(agent=agent, runs=1, patterns=3, flags=flag)
    with django_assert_num_queries(small):
        client.get("/")
    with django_assert_num_queries(small_filtered):
        client.get("/?flag=growth&sort=agent")


def test_proposal_page_query_count_is_constant(client, reviewer, agent, django_assert_num_queries):
    small_proposal = reviewable_proposal(agent=agent, runs=1, patterns=1)
    big_proposal = reviewable_proposal(agent=agent, runs=12, patterns=4)
    client.force_login(reviewer)
    small = _count(client, reverse("proposal-detail", args=[small_proposal.pk]))
    with django_assert_num_queries(small):
        client.get(reverse("proposal-detail", args=[big_proposal.pk]))
