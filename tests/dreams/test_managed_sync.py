"""Managed Agents sessions → canonical runs, through the real SDK against the loopback fake."""

import pytest

from agents.models import AuditEvent, Run
from dreams.managed.models import ManagedAgentLink
from dreams.managed.sync import sync_link
from tests.fake_managed import chat_turns, failed_outcome

pytestmark = pytest.mark.django_db


def _outcome(result, explanation):
    return {
        "description": "Answer the refund question correctly",
        "rubric": "- states the 30-day window",
        "result": result,
        "explanation": explanation,
    }


def test_sync_stores_each_session_once_and_maps_outcomes(managed_link, fake_managed):
    remote = managed_link.managed_agent_id
    ok = fake_managed.add_session(
        agent_id=remote,
        turns=chat_turns(
            "Refund?", "Yes, within 30 days.", tool="lookup_order", tool_result="order 7"
        ),
        outcome=_outcome("satisfied", "Window stated correctly."),
    )
    failed = fake_managed.add_session(
        agent_id=remote,
        turns=chat_turns("Refund?", "Never."),
        outcome=_outcome("failed", "Denied a valid refund."),
    )
    exhausted = fake_managed.add_session(
        agent_id=remote,
        turns=chat_turns("Refund?", "Maybe."),
        outcome=_outcome("max_iterations_reached", "Still vague after 3 tries."),
    )
    other_agent = fake_managed.add_agent(name="Other")
    fake_managed.add_session(agent_id=other_agent, turns=chat_turns("Hi", "Hello"))

    first = sync_link(link_id=managed_link.pk)
    second = sync_link(link_id=managed_link.pk)

    assert sorted(first.created) == sorted([ok, failed, exhausted])
    assert second.created == []
    runs = {r.external_id: r for r in Run.objects.filter(agent=managed_link.agent)}
    assert set(runs) == {ok, failed, exhausted}
    assert runs[ok].status == Run.Status.SUCCESS
    assert runs[failed].status == Run.Status.FAILURE
    assert runs[exhausted].status == Run.Status.FAILURE
    assert runs[failed].outcome_reason == "Denied a valid refund."
    assert runs[failed].expectations["rubric"] == (
        "Answer the refund question correctly\n\n- states the 30-day window"
    )
    # Messages in canonical form: the tool call and its result survive, thinking is dropped.
    blocks = [(m["role"], [b["type"] for b in m["content"]]) for m in runs[ok].messages]
    assert blocks == [
        ("user", ["text"]),
        ("assistant", ["tool_use"]),
        ("user", ["tool_result"]),
        ("assistant", ["text"]),
    ]
    assert runs[ok].step_count == 2
    assert runs[ok].input_tokens == 1200 and runs[ok].cache_read_tokens == 100
    assert runs[ok].latency_ms == 4500
    assert runs[ok].tools[0]["name"] == "lookup_order"
    assert runs[ok].metadata["managed"]["session_id"] == ok
    assert AuditEvent.objects.filter(action="managed.sync").count() == 1


def test_a_session_still_being_graded_waits_and_holds_the_cursor(managed_link, fake_managed):
    remote = managed_link.managed_agent_id
    grading = fake_managed.add_session(
        agent_id=remote, turns=chat_turns("Q", "A"), outcome=_outcome("evaluating", "")
    )
    later = fake_managed.add_session(
        agent_id=remote, turns=chat_turns("Q2", "A2"), outcome=_outcome("satisfied", "fine")
    )

    result = sync_link(link_id=managed_link.pk)
    assert result.created == [later] and result.pending == [grading]

    fake_managed.finish_evaluation(grading, result="failed", explanation="Wrong answer.")
    again = sync_link(link_id=managed_link.pk)

    assert again.created == [grading]
    assert Run.objects.get(external_id=grading).status == Run.Status.FAILURE
    link = ManagedAgentLink.objects.get(pk=managed_link.pk)
    assert link.sync_cursor is not None and link.last_synced_at is not None


def test_sync_requests_are_scoped_to_the_linked_agent_and_beta(managed_link, fake_managed):
    sync_link(link_id=managed_link.pk)
    listing = [r for r in fake_managed.requests if r["path"] == "/v1/sessions"][0]
    assert listing["query"]["agent_id"] == [managed_link.managed_agent_id]
    assert "managed-agents-2026-04-01" in listing["beta"]


def test_sync_endpoint_queues_a_sync_that_stores_runs(
    api, managed_link, fake_managed, django_capture_on_commit_callbacks
):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome(),
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/agents/support/managed/sync")
    assert response.status_code == 202
    assert Run.objects.get(external_id=session).status == Run.Status.FAILURE


def test_linking_shows_whether_a_key_is_configured_but_never_the_key(api, agent, fake_managed):
    remote = fake_managed.add_agent()
    store = fake_managed.add_store()
    response = api.put(
        "/api/v1/agents/support/managed",
        {"managed_agent_id": remote, "memory_store_id": store},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["api_key_configured"] is True
    assert fake_managed.api_key not in response.content.decode()
    assert AuditEvent.objects.filter(action="managed.link").exists()

    bad = api.put(
        "/api/v1/agents/support/managed",
        {"managed_agent_id": remote, "memory_store_id": store, "api_key_name": "nope"},
        format="json",
    )
    assert bad.status_code == 400
    assert "api_key_name" in bad.json()["error"]["fields"]


def test_a_missing_key_is_recorded_as_a_sync_error_without_secrets(
    managed_link, fake_managed, settings, monkeypatch
):
    from dreams.tasks import sync_agent_sessions

    monkeypatch.delenv("REVERIE_TEST_MANAGED_KEY")
    sync_agent_sessions(managed_link.pk)
    link = ManagedAgentLink.objects.get(pk=managed_link.pk)
    assert "ManagedNotConfigured" in link.last_sync_error
    assert fake_managed.api_key not in link.last_sync_error
    assert fake_managed.requests == []


def test_the_periodic_task_syncs_every_link_and_advances_hosted_dreams(
    managed_link, fake_managed, django_capture_on_commit_callbacks
):
    from config.celery import app
    from dreams.managed import hosted
    from dreams.managed.models import HostedDream
    from dreams.tasks import sync_all

    assert "dreams.managed.sync_all" in app.tasks
    fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome(),
    )
    sync_all()
    with django_capture_on_commit_callbacks(execute=True):
        dream = hosted.start_hosted_dream(agent=managed_link.agent)
    dream.refresh_from_db()
    fake_managed.dream_failed(dream.dream_id)
    HostedDream.objects.filter(pk=dream.pk).update(next_poll_at=dream.created_at)

    sync_all()

    assert HostedDream.objects.get(pk=dream.pk).status == HostedDream.Status.FAILED
    assert Run.objects.filter(agent=managed_link.agent).count() == 1


def test_another_workspace_cannot_see_or_change_the_link(outsider_api, managed_link):
    assert outsider_api.get("/api/v1/agents/support/managed").status_code == 404
    assert outsider_api.post("/api/v1/agents/support/managed/sync").status_code == 404
    assert outsider_api.post("/api/v1/agents/support/managed/dreams", {}).status_code == 404


def test_a_viewer_cannot_link_or_dream(client, viewer, managed_link):
    client.force_login(viewer)
    assert client.get("/api/v1/agents/support/managed").status_code == 200
    assert client.post("/api/v1/agents/support/managed/dreams").status_code == 403
    assert client.delete("/api/v1/agents/support/managed").status_code == 403
    assert ManagedAgentLink.objects.filter(pk=managed_link.pk).exists()


def test_a_run_stored_before_its_outcome_was_graded_gets_the_grade_once(managed_link, fake_managed):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id, turns=chat_turns("Refund?", "No.")
    )
    sync_link(link_id=managed_link.pk)
    assert Run.objects.get(external_id=session).status == Run.Status.UNKNOWN

    fake_managed.grade_later(session, outcome=failed_outcome("Still refused."))
    result = sync_link(link_id=managed_link.pk, session_ids=[session])
    again = sync_link(link_id=managed_link.pk, session_ids=[session])

    run = Run.objects.get(external_id=session)
    assert result.updated == [session] and again.existing == [session]
    assert run.status == Run.Status.FAILURE and run.outcome_reason == "Still refused."
    assert run.messages[-1]["content"][-1]["text"] == "Revised answer."
    assert run.expectations["rubric"].startswith("Answer the refund question correctly")


def test_hosted_dreams_start_on_schedule_for_opted_in_links(
    managed_link, fake_managed, django_capture_on_commit_callbacks
):
    from dreams.managed.models import HostedDream
    from dreams.tasks import sync_all

    fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome(),
    )
    with django_capture_on_commit_callbacks(execute=True):
        sync_all()
    assert not HostedDream.objects.exists()  # not opted in

    ManagedAgentLink.objects.filter(pk=managed_link.pk).update(hosted_dream_enabled=True)
    with django_capture_on_commit_callbacks(execute=True):
        sync_all()
        sync_all()

    dream = HostedDream.objects.get()
    assert dream.dream_id in fake_managed.dreams
    assert dream.cycle.report["trigger"] == "schedule"


def test_a_link_with_an_anthropic_workspace_sends_it_on_every_request(managed_link, fake_managed):
    ManagedAgentLink.objects.filter(pk=managed_link.pk).update(
        anthropic_workspace_id="wrkspc_support"
    )
    sync_link(link_id=managed_link.pk)
    assert fake_managed.requests
    assert {r["workspace"] for r in fake_managed.requests} == {"wrkspc_support"}


def test_linking_checks_the_remote_agent_and_store_first(api, agent, fake_managed):
    remote = fake_managed.add_agent()
    store = fake_managed.add_store()

    missing_store = api.put(
        "/api/v1/agents/support/managed",
        {"managed_agent_id": remote, "memory_store_id": "memstore_nope"},
        format="json",
    )
    missing_agent = api.put(
        "/api/v1/agents/support/managed",
        {"managed_agent_id": "agent_nope", "memory_store_id": store},
        format="json",
    )
    linked = api.put(
        "/api/v1/agents/support/managed",
        {"managed_agent_id": remote, "memory_store_id": store},
        format="json",
    )

    assert "memory_store_id" in missing_store.json()["error"]["fields"]
    assert "managed_agent_id" in missing_agent.json()["error"]["fields"]
    assert linked.status_code == 200 and linked.json()["managed_agent_version"] == 1
    assert ManagedAgentLink.objects.count() == 1
