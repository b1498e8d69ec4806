import re

import pytest
from playwright.sync_api import expect

from agents.models import AuditEvent, Run
from dreams.models import Proposal
from tests.factories import AgentFactory, RunFactory, reviewable_proposal

pytestmark = pytest.mark.browser


@pytest.fixture
def proposals(agent):
    billing = AgentFactory(workspace=agent.workspace, slug="billing", name="Billing desk")
    main = reviewable_proposal(
        agent=agent, runs=4, patterns=2, title="Verify the order before refunding"
    )
    reviewable_proposal(
        agent=billing, runs=1, title="Explain proration on plan changes", expected_value=2
    )
    reviewable_proposal(
        agent=agent,
        runs=1,
        title="Stop escalating standard refunds",
        expected_value=1.2,
        flags=[
            {"code": "possible_injection", "message": "Sentence copied from a customer message."}
        ],
    )
    return main


def test_review_flow_filter_open_expand_approve_and_audit(
    page, live_server, login, shot, reviewer, proposals
):
    login("riley-reviewer")
    expect(page.locator(".queue-row")).to_have_count(3)
    shot("queue")
    page.select_option("select[name=agent]", "support")
    expect(page.locator(".queue-row")).to_have_count(2)
    assert "agent=support" in page.url  # the filtered view stays shareable
    page.click(f"text={proposals.title}")
    page.wait_for_url(re.compile(rf"/proposals/{proposals.pk}/$"))
    expect(page.locator(".diff ins").first).to_be_visible()
    expect(page.locator("table.metrics")).to_contain_text("Target runs")
    expect(page.locator("svg.chart")).to_be_visible()
    row = page.locator("details.replay-row").first
    row.locator("summary").click()
    expect(row.locator(".traj-aligned")).to_be_visible()
    expect(row.locator(".is-divergence").first).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    shot("proposal")
    page.click("#approve-button")
    expect(page.locator("#proposal-status")).to_have_text("Approved")
    assert Proposal.objects.get(pk=proposals.pk).status == "approved"
    page.click("nav.nav >> text=Audit")
    expect(page.locator("table.audit")).to_contain_text("proposal.approve")
    expect(page.locator("table.audit")).to_contain_text("riley-reviewer")
    shot("audit")


def test_reject_without_comment_shows_a_message(page, login, reviewer, proposals, live_server):
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposals.pk}/")
    page.click("#reject-button")
    expect(page.locator("#decision-error")).to_contain_text("A comment is required")
    expect(page.locator("#proposal-status")).to_have_text("Ready for review")


def test_keyboard_j_k_and_approve(page, login, reviewer, proposals, live_server):
    login("riley-reviewer")
    page.keyboard.press("j")
    expect(page.locator(".queue-row.selected")).to_have_count(1)
    page.keyboard.press("j")
    page.keyboard.press("k")
    first = page.locator(".queue-row").first
    expect(first).to_have_class(re.compile("selected"))
    page.keyboard.press("o")
    page.wait_for_url(re.compile(rf"/proposals/{proposals.pk}/$"))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    expect(page.locator("#approve-dialog")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#proposal-status")).to_have_text("Approved")
    assert AuditEvent.objects.filter(
        action="proposal.approve", target_id=str(proposals.pk)
    ).exists()


def test_run_with_html_payloads_renders_text_and_runs_nothing(
    page, login, reviewer, agent, live_server, shot
):
    payload = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    run = RunFactory(
        agent=agent,
        external_id="xss-run",
        status=Run.Status.FAILURE,
        outcome_reason="Grader: " + payload,
        config_version=agent.stable_version,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi " + payload}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Customer wants a refund " + payload},
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "lookup_order",
                        "input": {"order_id": payload},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": payload}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Refund issued."}]},
        ],
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login("riley-reviewer")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator(".msg-user .block-text").first).to_contain_text(
        "<script>window.pwned = 1</script>"
    )
    assert page.evaluate("window.pwned") is None
    assert page.locator(".transcript img").count() == 0
    page.click("button[data-toggle=raw-json]")
    expect(page.locator("#raw-json")).to_be_visible()
    page.click("button[data-toggle=raw-json]")
    page.check("input[name=rating][value=negative]")
    page.fill("textarea[name=comment]", "Refunded without checking " + payload)
    page.click("text=Save feedback")
    expect(page.locator(".feedback li").first).to_contain_text("Refunded without checking <script>")
    shot("run")
    assert page.evaluate("window.pwned") is None and not dialogs


def test_agent_page_screenshot(page, login, reviewer, agent, proposals, live_server, shot):
    for index, status in enumerate(["success", "failure", "success", "success", "failure"]):
        RunFactory(
            agent=agent,
            status=status,
            config_version=proposals.base_version if index % 2 else agent.stable_version,
        )
    login("riley-reviewer")
    page.goto(f"{live_server.url}/agents/support/")
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator("#version-diff")).to_be_visible()
    expect(page.locator("#spend h2")).to_have_text("Spend, last 30 days")  # loaded by htmx
    shot("agent")


def test_edit_creates_a_new_revision_and_keeps_the_old_one_visible(
    page, login, reviewer, proposals, live_server, shot
):
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposals.pk}/")
    page.click("text=Edit candidate")
    box = page.locator("#system_prompt")
    box.fill(box.input_value().replace("Always call", "Always, without exception, call"))
    page.fill("#note", "stronger wording")
    shot("edit", full_page=False)
    page.click("text=Save as new revision")
    expect(page.locator(".flash-success")).to_contain_text("Saved revision 2")
    expect(page.locator(".diff ins", has_text="without exception").first).to_be_visible()
    page.click(f"text=#{proposals.pk} (rev 1, superseded)")
    expect(page.locator("#proposal-status")).to_have_text("Superseded")


def test_dreams_list_and_cycle_report(page, login, viewer, proposals, live_server, shot):
    login("vic-viewer")
    page.click("nav.nav >> text=Dreams")
    page.click(f"text=#{proposals.cycle_id}")
    expect(page.locator("h1")).to_contain_text(f"Dream cycle {proposals.cycle_id}")
    expect(page.locator("text=Download report (Markdown)")).to_be_visible()
    shot("cycle")


def test_simulated_user_turns_and_the_simulator_check_are_shown(
    page, login, reviewer, proposals, live_server
):
    from dreams.models import Experiment, Replay

    replay = Replay.objects.filter(experiment__proposal=proposals, arm="candidate").first()
    replay.messages = [
        *replay.messages,
        {"role": "user", "content": [{"type": "text", "text": "Yes, go ahead."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
    ]
    replay.simulated_turns = [len(replay.messages) - 2]
    replay.save(update_fields=["messages", "simulated_turns"])
    experiment = Experiment.objects.get(pk=replay.experiment_id)
    experiment.stats["simulated_user"] = {
        "share": 0.25, "baseline_n": 4, "baseline_agree": 2, "baseline_agreement": 0.5,
        "trusted": False, "tokens": 900, "tokens_share": 0.1,
    }  # fmt: skip
    experiment.save(update_fields=["stats"])
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposals.pk}/")

    expect(page.locator("#simulated-user-check")).to_contain_text("cannot be trusted")
    row = page.locator(f"details.replay-row[data-run='{replay.run_id}']")
    expect(row.locator("summary")).to_contain_text("sim. user")
    row.locator("summary").click()
    marked = row.locator("[data-column='candidate'] .is-simulated-user")
    expect(marked).to_have_count(1)
    expect(marked).to_contain_text("simulated user")
    expect(marked).to_contain_text("Yes, go ahead.")
