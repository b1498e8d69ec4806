"""The "Propose a change" page: the agent page links it, bad input keeps the text, viewers can't."""

import pytest

from dreams.models import Proposal

pytestmark = pytest.mark.django_db


def test_the_agent_page_links_the_editor_with_the_stable_documents(client, agent, reviewer):
    client.force_login(reviewer)
    assert 'id="propose-change"' in client.get(f"/agents/{agent.slug}/").content.decode()
    page = client.get(f"/agents/{agent.slug}/propose/").content.decode()
    assert agent.stable_version.system_prompt in page and 'name="runs"' in page


def test_an_unchanged_candidate_is_refused_and_the_text_kept(client, agent, reviewer):
    client.force_login(reviewer)
    response = client.post(
        f"/agents/{agent.slug}/propose/",
        {"title": "Same", "system_prompt": agent.stable_version.system_prompt, "runs": "unstudied"},
    )
    assert response.status_code == 400
    assert "same as the stable version" in response.content.decode()
    assert not Proposal.objects.exists()


def test_a_person_proposal_from_the_form_is_replayed(client, agent, reviewer):
    client.force_login(reviewer)
    response = client.post(
        f"/agents/{agent.slug}/propose/",
        {"title": "Be brief", "system_prompt": "Be brief. <script>x</script>", "runs": "ids"},
    )
    proposal = Proposal.objects.get(title="Be brief")
    assert response["Location"] == f"/proposals/{proposal.pk}/"
    assert proposal.source == "human" and proposal.author == reviewer
    page = client.get(response["Location"]).content.decode()
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


def test_a_viewer_cannot_open_the_editor(client, agent, viewer):
    client.force_login(viewer)
    assert client.get(f"/agents/{agent.slug}/propose/").status_code == 403
