"""Browser: honest verdicts, a diff worth reading, aligned trajectories, layout at 800 px."""

import re

import pytest
from playwright.sync_api import expect

from agents.models import AuditEvent, ConfigVersion, Run
from dreams.models import Experiment, Proposal, Replay
from tests.factories import ReplayFactory, RunFactory, reviewable_proposal

pytestmark = pytest.mark.browser

LONG = "\n".join(f"- Rule {i}: keep replies short and quote the order number." for i in range(30))
OLD_TAIL = (
    "\n\n## Refunds\n\nRefunds are allowed within 30 days of delivery. Always look the order up "
    "first and check the delivery date. Never refund on the customer's word alone.\n"
)
NEW_TAIL = (
    "\n\n## Refunds\n\n- Refunds are allowed within 30 days of delivery.\n- Always look the order "
    "up first with lookup_order and check the delivery date.\n- Never refund on the customer's "
    "word alone.\n\n## Photos\n\n- Ask for a photo of damaged items.\n"
)


@pytest.fixture
def unmeasurable(agent):
    """A ready proposal whose target replays never reached a grade, with many replay rows."""
    proposal = reviewable_proposal(agent=agent, runs=1, title="Unmeasurable policy rewrite")
    ConfigVersion.objects.filter(pk=proposal.base_version_id).update(
        memory_documents={"policies/refunds.md": "# Policy\n\n" + LONG + OLD_TAIL}
    )
    ConfigVersion.objects.filter(pk=proposal.candidate_version_id).update(
        memory_documents={"policies/refunds.md": "# Policy\n\n" + LONG + NEW_TAIL}
    )
    experiment = Experiment.objects.get(proposal=proposal)
    empty = {"passed": 0, "n": 0, "rate": 0.0, "ci": None}
    stats = dict(experiment.stats)
    stats["target"] = {**stats["target"], "baseline": empty, "candidate": empty}
    stats["verdict"] = "not_measurable"
    stats["verdict_reason"] = "No target replay reached a grade (pass or fail)."
    experiment.stats = stats
    experiment.save(update_fields=["stats"])
    for i in range(55):
        run = RunFactory(agent=agent, status=Run.Status.FAILURE, external_id=f"wr-{i:03d}")
        for arm in (Replay.Arm.BASELINE, Replay.Arm.CANDIDATE):
            ReplayFactory(experiment=experiment, run=run, arm=arm, verdict="unverifiable")
    return proposal


def _no_sideways_scroll(page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways: {widths}"


def test_unmeasurable_proposal_needs_an_acknowledgement_and_the_bar_stays_in_view(
    page, live_server, login, shot, owner, unmeasurable
):
    login("olive-owner")
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(f"{live_server.url}/?verdict=not_measurable")
    expect(page.locator(".queue-row")).to_have_count(1)
    expect(page.locator(".q-verdict")).to_have_text("Not measurable")
    _no_sideways_scroll(page)
    shot("honest-queue-800")

    page.click("text=Unmeasurable policy rewrite")
    page.wait_for_url(re.compile(rf"/proposals/{unmeasurable.pk}/$"))
    expect(page.locator("#verdict")).to_contain_text("Not measurable")
    expect(page.locator("table.metrics")).to_contain_text("no graded runs")
    _no_sideways_scroll(page)
    # Scrolled past 50 replay rows, the decision bar is still on screen.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight * 0.6)")
    bar = page.locator("#decision-bar")
    expect(bar).to_be_in_viewport()
    expect(bar).to_contain_text("Not measurable")
    shot("honest-proposal-800-bar")

    # Approving without the acknowledgement is refused, with the reason on the page.
    page.click("#approve-button")
    expect(page.locator("#decision-error")).to_contain_text("not measurable")
    assert Proposal.objects.get(pk=unmeasurable.pk).status == "ready"
    page.check("#acknowledge-verdict")
    page.click("#approve-button")
    expect(page.locator("#proposal-status")).to_have_text("Approved")
    assert AuditEvent.objects.filter(action="proposal.verdict_acknowledged").exists()


def test_the_diff_keeps_its_gutters_pairs_reflowed_words_and_takes_line_comments(
    page, live_server, login, shot, reviewer, unmeasurable
):
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{unmeasurable.pk}/")
    doc = page.locator("section.diff-doc", has_text="policies/refunds.md")
    # The table opens with a collapsed block: the line-number columns stay narrow.
    widths = (
        doc.locator("tbody:not(.diff-expander) tr")
        .first.locator("td.ln")
        .evaluate_all("cells => cells.map(c => c.getBoundingClientRect().width)")
    )
    assert widths and all(w < 60 for w in widths), widths
    # The paragraph reflowed into bullets: only the really new words are highlighted.
    inserted = doc.locator("ins").all_inner_texts()
    assert any("lookup_order" in t for t in inserted)
    assert not any("delivery" in t for t in inserted)
    expect(doc.locator(".pill-new-heading")).to_have_count(1)
    expect(doc.locator(".new-sections")).to_contain_text("Photos")
    shot("diff-1280")

    row = doc.locator("tr.add", has_text="lookup_order")
    row.hover()
    row.locator(".add-comment").click()
    form = page.locator(".line-comment-form")
    expect(form).to_be_visible()
    form.locator("textarea").fill("Name the tool in every rule?")
    form.locator("button", has_text="Comment").click()
    thread = page.locator(".thread").first
    expect(thread).to_contain_text("Name the tool in every rule?")
    expect(page.locator("#discussion .thread-link")).to_contain_text("policies/refunds.md line")
    thread.locator("[data-resolve]").click()
    expect(page.locator(".thread.thread-resolved")).to_have_count(1)
    expect(page.locator("#discussion")).to_contain_text("resolved")

    page.goto(f"{live_server.url}/proposals/{unmeasurable.pk}/?view=split")
    widths = page.locator("table.diff-split td.ln").evaluate_all(
        "cells => cells.slice(0, 4).map(c => c.getBoundingClientRect().width)"
    )
    assert all(w < 60 for w in widths), widths


def test_aligned_trajectories_and_no_sideways_scroll_at_800(
    page, live_server, login, shot, reviewer, agent
):
    proposal = reviewable_proposal(agent=agent, runs=2, title="Aligned replay")
    login("riley-reviewer")
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/")
    row = page.locator("details.replay-row").first
    row.locator("summary").click()
    expect(row.locator(".traj-aligned")).to_be_visible()
    expect(row.locator(".traj-differs .is-divergence").first).to_be_visible()
    _no_sideways_scroll(page)
    shot("trajectory-800")
    run_id = row.get_attribute("data-run")
    urls = [
        "/",
        f"/proposals/{proposal.pk}/",
        f"/proposals/{proposal.pk}/?view=split",
        f"/proposals/{proposal.pk}/replays/{run_id}/",
        f"/proposals/{proposal.pk}/edit/",
        f"/agents/{agent.slug}/",
        "/agents/",
        "/dreams/",
        "/runs/",
        "/audit/",
        "/rollouts/",
    ]
    for url in urls:
        page.goto(live_server.url + url)
        _no_sideways_scroll(page)


def test_saving_an_edit_shows_progress_then_the_new_revision(
    page, live_server, login, reviewer, agent
):
    proposal = reviewable_proposal(agent=agent, runs=1, title="Edit me")
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/edit/")
    page.fill("#note", "shorter")
    page.locator("#system_prompt").press("End")
    page.locator("#system_prompt").type(" Be brief.")
    # What the reviewer sees while the request runs: the progress line, the button disabled.
    page.evaluate(
        """document.body.addEventListener('htmx:beforeSend', () => {
             sessionStorage.seen = JSON.stringify([
               getComputedStyle(document.getElementById('save-progress')).display,
               document.getElementById('save-button').disabled]); })"""
    )
    page.click("#save-button")
    page.wait_for_url(re.compile(r"/proposals/\d+/$"))
    new = Proposal.objects.get(revision_of=proposal)
    assert page.url.endswith(f"/proposals/{new.pk}/")
    expect(page.locator(".flashes")).to_contain_text("Saved revision 2")
    assert page.evaluate("JSON.parse(sessionStorage.seen)") == ["inline-flex", True]
