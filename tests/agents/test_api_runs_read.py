"""GET /api/v1/runs (filters, cursor pagination), GET /runs/<id>, POST /feedback."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Feedback
from tests.factories import (
    AgentFactory,
    ConfigVersionFactory,
    FeedbackFactory,
    RunFactory,
)

pytestmark = pytest.mark.django_db


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()["results"]]


@pytest.fixture
def runs(agent: Any, workspace: Any) -> dict[str, Any]:
    """A small history: two agents, statuses, versions, feedback, spread over five days."""
    now = timezone.now()
    v2 = ConfigVersionFactory(agent=agent, number=2)
    other = AgentFactory(workspace=workspace, slug="billing")
    made = {
        "old_fail": RunFactory(agent=agent, status="failure", started_at=now - timedelta(days=5)),
        "mid_ok": RunFactory(
            agent=agent, status="success", started_at=now - timedelta(days=3), config_version=v2
        ),
        "new_fail": RunFactory(
            agent=agent, status="failure", started_at=now - timedelta(days=1), config_version=v2
        ),
        "billing": RunFactory(agent=other, status="error", started_at=now - timedelta(days=2)),
    }
    FeedbackFactory(run=made["mid_ok"], rating="negative")
    FeedbackFactory(run=made["new_fail"], rating="positive")
    return made


def test_runs_are_listed_newest_first(api, runs):
    response = api.get("/api/v1/runs")

    expected = ["new_fail", "billing", "mid_ok", "old_fail"]
    assert ids(response) == [runs[k].pk for k in expected]
    first = response.json()["results"][0]
    assert first["agent"] == "support"
    assert first["config_version"] == 2
    assert "messages" not in first  # the list is a summary


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("agent=support", ["new_fail", "mid_ok", "old_fail"]),
        ("agent=billing", ["billing"]),
        ("status=failure", ["new_fail", "old_fail"]),
        ("agent=support&status=success", ["mid_ok"]),
        ("negative_feedback=true", ["mid_ok"]),
        ("negative_feedback=false", ["new_fail", "billing", "old_fail"]),
        ("config_version=2", ["new_fail", "mid_ok"]),
    ],
)
def test_runs_can_be_filtered(api, runs, query, expected):
    assert ids(api.get(f"/api/v1/runs?{query}")) == [runs[k].pk for k in expected]


def test_runs_can_be_filtered_by_time_range(api, runs):
    now = timezone.now()
    since = (now - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (now - timedelta(days=2, hours=1)).isoformat()

    response = api.get("/api/v1/runs", {"since": since, "until": until})

    assert ids(response) == [runs["mid_ok"].pk]


def test_a_naive_time_filter_means_utc(api, runs):
    naive = (timezone.now() - timedelta(days=4)).replace(tzinfo=None).isoformat()

    assert ids(api.get("/api/v1/runs", {"since": naive})) == [
        runs[k].pk for k in ("new_fail", "billing", "mid_ok")
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=exploded", "status"),
        ("since=yesterday", "since"),
        ("config_version=two", "config_version"),
        ("negative_feedback=maybe", "negative_feedback"),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(api, runs, query, field):
    response = api.get(f"/api/v1/runs?{query}")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_cursor_pagination_walks_every_run_once(api, agent):
    now = timezone.now()
    made = [RunFactory(agent=agent, started_at=now - timedelta(minutes=i % 3)) for i in range(7)]

    seen: list[int] = []
    url = "/api/v1/runs?page_size=3"
    pages = 0
    while url:
        body = api.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url = body["next"]
        pages += 1

    assert pages == 3
    assert sorted(seen) == sorted(r.pk for r in made)
    assert len(seen) == len(set(seen))


def test_another_workspace_sees_none_of_our_runs(outsider_api, runs):
    assert ids(outsider_api.get("/api/v1/runs")) == []
    assert ids(outsider_api.get("/api/v1/runs?agent=support")) == []
    assert outsider_api.get(f"/api/v1/runs/{runs['old_fail'].pk}").status_code == 404


def test_run_detail_has_messages_and_feedback(api, runs):
    response = api.get(f"/api/v1/runs/{runs['mid_ok'].pk}")

    body = response.json()
    assert response.status_code == 200
    assert body["messages"] == runs["mid_ok"].messages
    assert [f["rating"] for f in body["feedback"]] == ["negative"]


def test_an_unknown_run_is_a_404_in_the_error_shape(api, runs):
    response = api.get("/api/v1/runs/999999")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- Feedback ------------------------------------------------------------------------------


def test_feedback_by_run_id_is_stored_as_api_feedback(api, runs):
    run = runs["old_fail"]
    response = api.post(
        "/api/v1/feedback",
        {"run_id": run.pk, "rating": "negative", "score": 0.2, "comment": "Refunded too late"},
        format="json",
    )

    assert response.status_code == 201, response.content
    feedback = Feedback.objects.get(pk=response.json()["id"])
    assert (feedback.run, feedback.rating, feedback.score) == (run, "negative", 0.2)
    assert feedback.comment == "Refunded too late"
    assert feedback.source == "api"
    assert feedback.author is None  # an API key is not a user


def test_feedback_by_agent_and_external_id_finds_the_run(api, runs):
    run = runs["billing"]
    response = api.post(
        "/api/v1/feedback",
        {"agent": "billing", "external_id": run.external_id, "rating": "positive"},
        format="json",
    )

    assert response.status_code == 201
    assert list(run.feedback.values_list("rating", flat=True)) == ["positive"]


def test_feedback_from_a_browser_session_is_human_and_has_an_author(client, owner, runs):
    client.force_login(owner)
    response = client.post(
        "/api/v1/feedback",
        {"run_id": runs["old_fail"].pk, "rating": "negative"},
        content_type="application/json",
    )

    feedback = Feedback.objects.get(pk=response.json()["id"])
    assert (feedback.source, feedback.author) == ("human", owner)


def test_feedback_for_an_unknown_external_id_is_a_404(api, runs):
    response = api.post(
        "/api/v1/feedback",
        {"agent": "support", "external_id": "nope", "rating": "positive"},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["error"]["fields"] == {"external_id": ["unknown"]}


def test_feedback_needs_a_run_reference_and_a_valid_rating(api, runs):
    no_run = api.post("/api/v1/feedback", {"rating": "negative"}, format="json")
    bad_rating = api.post(
        "/api/v1/feedback", {"run_id": runs["old_fail"].pk, "rating": "meh"}, format="json"
    )

    assert no_run.status_code == 400
    assert "run_id" in no_run.json()["error"]["fields"]
    assert list(bad_rating.json()["error"]["fields"]) == ["rating"]
    assert Feedback.objects.count() == 2  # only the fixture's


def test_another_workspace_cannot_give_feedback_on_our_runs(outsider_api, runs):
    by_id = outsider_api.post(
        "/api/v1/feedback", {"run_id": runs["old_fail"].pk, "rating": "negative"}, format="json"
    )
    by_external = outsider_api.post(
        "/api/v1/feedback",
        {"agent": "support", "external_id": runs["old_fail"].external_id, "rating": "negative"},
        format="json",
    )

    assert by_id.status_code == 404
    assert by_external.status_code == 404
    assert Feedback.objects.count() == 2


def test_listing_runs_takes_the_same_number_of_queries_for_more_runs(
    api, agent, django_assert_max_num_queries
):
    RunFactory.create_batch(3, agent=agent)
    with django_assert_max_num_queries(4) as few:
        api.get("/api/v1/runs")
    RunFactory.create_batch(20, agent=agent)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = api.get("/api/v1/runs")

    assert len(response.json()["results"]) == 23


def test_a_nul_character_in_a_filter_is_a_400(api, runs):
    response = api.get("/api/v1/runs", {"agent": "sup\x00port"})

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["agent"]


def test_feedback_accepts_the_hosted_apis_interaction_id(api, runs):
    run = runs["old_fail"]
    response = api.post(
        "/api/v1/feedback",
        {"agent": "support", "interaction_id": run.external_id, "rating": "negative"},
        format="json",
    )

    assert response.status_code == 201
    assert run.feedback.filter(rating="negative").count() == 1
