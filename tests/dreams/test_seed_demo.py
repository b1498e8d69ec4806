"""`manage.py seed_demo` builds the demo once, with three recurring failure modes to dream about,
and ends with one dream cycle, so a fresh demo's queue holds real, replayed proposals."""

from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent, AuditEvent, ConfigVersion, Feedback, Membership, Run, Workspace
from agents.transcripts import iter_tool_calls
from dreams.models import DreamCycle, Proposal

pytestmark = pytest.mark.django_db

FAILURE_MODES = {"past_window", "unverified", "angry"}


def counts() -> dict[str, int]:
    return {
        "workspaces": Workspace.objects.count(),
        "memberships": Membership.objects.count(),
        "agents": Agent.objects.count(),
        "versions": ConfigVersion.objects.count(),
        "runs": Run.objects.count(),
        "feedback": Feedback.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


@pytest.fixture
def seeded() -> dict[str, int]:
    out = StringIO()
    call_command("seed_demo", "--no-dream", stdout=out)
    assert "300 runs (300 new)" in out.getvalue()
    return counts()


def test_seeding_twice_changes_nothing(seeded):
    out = StringIO()
    call_command("seed_demo", "--no-dream", stdout=out)

    assert "(0 new)" in out.getvalue()
    assert counts() == seeded
    assert seeded["runs"] == 300
    assert seeded["agents"] == seeded["versions"] == 1


def test_the_demo_login_works_and_is_a_workspace_admin(seeded):
    user = authenticate(username="demo", password="reverie-demo")

    assert user is not None
    assert Membership.objects.get(user=user).role == Membership.Role.ADMIN


def test_the_demo_runs_span_two_weeks_and_are_replayable(seeded):
    agent = Agent.objects.get(slug="refunds-desk")
    runs = Run.objects.filter(agent=agent)
    oldest = runs.order_by("started_at").first().started_at

    assert timezone.now() - oldest > timedelta(days=13)
    assert runs.filter(config_version=agent.stable_version).count() == 300
    tool_names = {c["name"] for r in runs[:50] for c in iter_tool_calls(r.messages)}
    assert {"lookup_order", "issue_refund", "escalate_to_human"} <= tool_names
    assert agent.stable_version.memory_documents
    assert set(agent.write_tools) == {"issue_refund", "escalate_to_human"}


def test_three_failure_modes_recur_with_feedback_and_expectations(seeded):
    failures = Run.objects.filter(status="failure")
    modes = Counter(r.metadata["scenario"] for r in failures)

    assert set(modes) == FAILURE_MODES
    assert all(n >= 15 for n in modes.values()), modes
    passing = Run.objects.filter(status="success").count()
    assert 0.55 < passing / 300 < 0.85
    negative_with_comment = Feedback.objects.filter(rating="negative").exclude(comment="")
    assert negative_with_comment.count() >= 30
    assert Run.objects.exclude(expectations={}).count() >= 100
    assert Run.objects.filter(expectations__has_key="forbidden_tools").exists()


def test_an_unverified_refund_refunds_without_looking_the_order_up(seeded):
    run = Run.objects.filter(metadata__scenario="unverified", status="failure").first()
    names = [c["name"] for c in iter_tool_calls(run.messages)]

    assert "issue_refund" in names
    assert "lookup_order" not in names[: names.index("issue_refund")]


def test_seed_demo_dreams_once_and_leaves_replayed_proposals_in_the_queue(
    django_capture_on_commit_callbacks,
):
    # The replays are enqueued after commit, as on a real server.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--runs", "160", stdout=StringIO())
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--runs", "160", stdout=StringIO())  # no second cycle

    cycle = DreamCycle.objects.get()
    assert cycle.status == DreamCycle.Status.SUCCEEDED
    ready = Proposal.objects.filter(cycle=cycle, status=Proposal.Status.READY)
    assert ready.exists()
    for proposal in ready:
        stats = proposal.latest_experiment.stats
        assert stats["fidelity"] >= 0.9
        assert stats["target"]["n"] > 0
