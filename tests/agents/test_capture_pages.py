"""The capture side's HTML pages: scoped to the member's workspace, run content escaped."""

import pytest

from tests.factories import RunFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client, agent):
    response = client.get("/")

    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_agents_page_lists_the_workspace_agents(client, viewer, agent):
    client.force_login(viewer)

    response = client.get("/agents/")

    assert response.status_code == 200
    assert "Support" in response.content.decode()


def test_a_run_page_escapes_run_content(client, viewer, agent):
    run = RunFactory(
        agent=agent,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "<script>alert(1)</script>"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        ],
    )
    client.force_login(viewer)

    page = client.get(f"/runs/{run.pk}/").content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_another_workspace_gets_404_for_our_run_page(client, outsider, agent):
    run = RunFactory(agent=agent)
    client.force_login(outsider)

    assert client.get(f"/runs/{run.pk}/").status_code == 404


def test_switching_to_a_workspace_one_is_not_a_member_of_is_refused(client, viewer, agent):
    elsewhere = WorkspaceFactory()
    client.force_login(viewer)

    response = client.post("/workspace/", {"workspace": elsewhere.pk})

    assert response.status_code == 403
