"""Dreams pages: the cycles list, a cycle's page and its Markdown report, "Dream now"."""

import pytest
from django.urls import reverse

from dreams import cycles
from dreams.models import DreamCycle
from tests.factories import DreamCycleFactory, reviewable_proposal

pytestmark = pytest.mark.django_db


def test_dreams_list_and_cycle_report_with_markdown_download(client, viewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    cycle = proposal.cycle
    client.force_login(viewer)
    assert f"#{cycle.pk}" in client.get("/dreams/").content.decode()
    page = client.get(reverse("cycle-detail", args=[cycle.pk])).content.decode()
    assert proposal.title in page
    md = client.get(reverse("cycle-markdown", args=[cycle.pk]))
    assert md["Content-Disposition"].startswith("attachment")
    assert proposal.title in md.content.decode()


def test_cycle_page_renders_report_records_escaped(client, viewer, agent):
    """The report's lists the page does not already show (refused answers, not drafted) come as
    tables with readable, escaped cells; its scalar fields and its patterns are not dumped again
    beside the header and the curated pattern table."""
    cycle = DreamCycleFactory(
        agent=agent,
        report={
            "runs_studied": 42,
            "created_at": "2026-12-02T06:24:42.875770+00:00",
            "patterns": [{"title": "Unverified refunds", "grouping_reason": "raw"}],
            "refused_answers": [{"step": "<b>merge</b>", "reason": "cut off at max_tokens"}],
        },
    )
    client.force_login(viewer)
    html = client.get(reverse("cycle-detail", args=[cycle.pk])).content.decode()
    assert "&lt;b&gt;merge&lt;/b&gt;" in html and "<b>merge</b>" not in html
    assert "<h2>Refused answers</h2>" in html and "<th>Step</th>" in html
    assert "2026-12-02T06:24:42" not in html  # no raw summary of the report's fields
    assert "grouping_reason" not in html and "<h2>Patterns</h2>" not in html


def test_dream_now_queues_a_manual_cycle_and_the_page_polls_it(client, reviewer, agent):
    client.force_login(reviewer)
    url = reverse("agent-detail", args=["support"])

    response = client.post(reverse("agent-dream", args=["support"]))

    assert response.status_code == 302
    cycle = DreamCycle.objects.get(agent=agent)
    assert (cycle.trigger, cycle.created_by, cycle.status) == ("manual", reviewer, "queued")
    # While it is queued the cycles table polls for progress.
    assert 'hx-trigger="every 3s"' in client.get(url).content.decode()


def test_dream_now_twice_shows_why_the_second_is_refused(client, reviewer, agent):
    client.force_login(reviewer)
    client.post(reverse("agent-dream", args=["support"]))

    page = client.post(reverse("agent-dream", args=["support"]), follow=True).content.decode()

    assert DreamCycle.objects.filter(agent=agent).count() == 1
    assert "Could not start a dream cycle" in page


def test_viewer_cannot_start_a_dream(client, viewer, agent):
    assert client.force_login(viewer) is None
    assert client.post(reverse("agent-dream", args=["support"])).status_code == 403


def test_dream_now_says_the_cycle_finished_when_it_did(client, reviewer, agent, monkeypatch):
    finished = DreamCycleFactory(agent=agent, status=DreamCycle.Status.SUCCEEDED)
    monkeypatch.setattr(cycles, "start_cycle", lambda **kwargs: finished)
    client.force_login(reviewer)
    page = client.post(reverse("agent-dream", args=[agent.slug]), follow=True).content.decode()
    assert f"Dream cycle {finished.pk} finished: 0 proposals drafted." in page
    assert "queued" not in page.split('class="flashes"')[1].split("</div></div>")[0]


def test_dream_now_says_queued_only_while_queued(client, reviewer, agent):
    client.force_login(reviewer)
    page = client.post(reverse("agent-dream", args=[agent.slug]), follow=True).content.decode()
    cycle = DreamCycle.objects.get(agent=agent)
    assert f"Dream cycle {cycle.pk} queued; a worker will start it." in page
