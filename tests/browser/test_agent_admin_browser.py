"""The admin's agent form in the browser: write tools ticked from the agent's tools, a sandbox
path that does not import refused on its field, rollout stages typed as percents."""

import io

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from agents.models import Agent, Membership
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def demo(transactional_db):
    call_command("seed_demo", runs=20, no_dream=True, stdout=io.StringIO())
    agent = Agent.objects.get(slug="refunds-desk")
    admin = UserFactory(username="ada-admin", is_staff=True, is_superuser=True)
    MembershipFactory(user=admin, workspace=agent.workspace, role=Membership.Role.ADMIN)
    return agent


def test_the_agent_form_guides_and_refuses_bad_settings(page, live_server, login, shot, demo):
    login("ada-admin")
    page.goto(f"{live_server.url}/admin/agents/agent/{demo.pk}/change/")
    expect(page.locator("input[name=write_tools][value=lookup_order]")).to_be_visible()
    page.check("input[name=write_tools][value=lookup_order]")
    page.fill("textarea[name=sandbox_tools]", "check_refund_policy = no.such.callable")
    page.fill("input[name=rollout_stages]", "10, 50, 100")
    page.click("input[name=_continue]")
    errors = page.locator(".errorlist")
    expect(errors.first).to_contain_text("cannot import no.such.callable")
    shot("admin-agent-error")
    page.fill("textarea[name=sandbox_tools]", "check_refund_policy = json.dumps")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("changed successfully")
    demo.refresh_from_db()
    assert "lookup_order" in demo.write_tools
    assert demo.sandbox_tools == {"check_refund_policy": "json.dumps"}
    assert demo.rollout_stages == [10, 50, 100]
