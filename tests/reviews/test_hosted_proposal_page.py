"""A proposal written by Anthropic's Dreams API is reviewed like any other: memory diff + evidence."""

import pytest
from django.urls import reverse

from dreams.managed import hosted
from dreams.managed.sync import sync_link
from dreams.models import Proposal
from tests.fake_managed import chat_turns, failed_outcome

pytestmark = pytest.mark.django_db


def test_a_hosted_dream_proposal_page_shows_its_memory_diff_and_replay_evidence(
    client, reviewer, managed_link, fake_managed, django_capture_on_commit_callbacks, settings
):
    # The simulated rubric judge passes these recorded failures, so the harness check would
    # (rightly) stop the experiment before its replays; this test is about the replay evidence.
    settings.REVERIE_HARNESS_CHECK = False
    for n in range(3):
        fake_managed.add_session(
            agent_id=managed_link.managed_agent_id,
            turns=chat_turns(f"Can I return order {n} after 40 days?", "Yes, of course."),
            outcome=failed_outcome("Promised a refund outside the 30-day window."),
        )
    sync_link(link_id=managed_link.pk)
    with django_capture_on_commit_callbacks(execute=True):
        dream = hosted.start_hosted_dream(agent=managed_link.agent)
    dream.refresh_from_db()
    memories = fake_managed.store_contents(managed_link.memory_store_id)
    memories["/policies/window.md"] = "Refunds only within 30 days of delivery; say so plainly."
    fake_managed.dream_completed(dream.dream_id, memories=memories)
    with django_capture_on_commit_callbacks(execute=True):  # the experiment's replays run
        dream = hosted.poll(hosted_id=dream.pk)
    proposal = Proposal.objects.get(pk=dream.proposal_id)
    assert proposal.status == Proposal.Status.READY

    client.force_login(reviewer)
    page = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()

    assert "Anthropic Dreams API" in page  # where the change came from
    assert "/policies/window.md" in page and "say so plainly" in page  # the memory diff
    experiment = proposal.latest_experiment
    assert experiment.stats["target"]["n"] == 3
    assert 'id="evidence"' in page or "Evidence" in page
    assert f"#{experiment.pk}" in page
