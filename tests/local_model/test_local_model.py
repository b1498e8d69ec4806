"""End to end through a real (tiny) model: `make test-local-model` runs these against the local
adapter (dreams/llm/local/). They assert plumbing and robustness, never what the model said:
every answer is used or refused with a recorded reason, guards' rejections are shown, nothing
crashes, every call is accounted at $0.

Skipped unless REVERIE_LOCAL_MODEL_URL names a running adapter (the normal suite never has one).
"""

import io
import json
import os
import random
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents import demo, services
from agents.ingest import ingest_runs
from agents.models import Agent, Run
from dreams import cycles
from dreams.experiments import start_proposal_experiment
from dreams.models import DreamCycle, Experiment, ModelCall, Proposal, Replay
from dreams.proposals import create_proposal

URL = os.environ.get("REVERIE_LOCAL_MODEL_URL", "")


def _adapter_up() -> str:
    """ "" when the adapter answers /healthz, else why these tests are skipped."""
    if not URL:
        return "REVERIE_LOCAL_MODEL_URL is not set (run `make test-local-model`)"
    try:
        with urllib.request.urlopen(f"{URL}/healthz", timeout=5) as response:  # noqa: S310
            json.loads(response.read())
    except OSError as exc:
        return f"the local model adapter at {URL} does not answer: {exc}"
    return ""


pytestmark = [
    pytest.mark.local_model,
    pytest.mark.django_db,
    pytest.mark.skipif(bool(_adapter_up()), reason=_adapter_up() or "adapter up"),
]

WINDOW_GUIDANCE = (
    "\n## Refund window\nBefore issuing any refund, check the refund window with "
    "check_refund_policy and decline orders that are not eligible.\n"
)


@pytest.fixture(autouse=True)
def local_backend(settings: Any) -> None:
    """Reverie reaches the adapter as it reaches Claude: a base URL and a (dummy) key."""
    settings.REVERIE_MODEL_BACKEND = "local"
    settings.ANTHROPIC_BASE_URL = URL
    settings.ANTHROPIC_API_KEY = "local"
    settings.REVERIE_MODEL_TIMEOUT = 300.0
    settings.REVERIE_MODEL_MAX_RETRIES = 1
    settings.REVERIE_REPLICATES = 1
    # A small cycle and small experiments: the phase has five minutes on a busy machine.
    settings.REVERIE_DREAM_MAX_DRAFTING_RUNS = 2
    settings.REVERIE_DREAM_DIAGNOSE_PER_PATTERN = 3
    settings.REVERIE_REGRESSION_SAMPLE_SIZE = 0
    settings.REVERIE_REPLAY_MAX_TOKENS = 96
    settings.REVERIE_SIMULATED_USER_MAX_TOKENS = 48
    settings.REVERIE_SIMULATED_USER_MAX_TURNS = 1
    settings.REVERIE_REPLAY_STEP_MARGIN = 1


def small_agent(*, failing: int, passing: int) -> Agent:
    """The demo's Refunds desk with a few runs: `failing` past-window failures, `passing` ok."""
    call_command("seed_demo", "--runs", "0", "--no-dream", stdout=io.StringIO())
    agent = Agent.objects.select_related("stable_version", "workspace").get(slug="refunds-desk")
    rng = random.Random(17)
    start = timezone.now() - timedelta(days=2)
    payloads = [
        demo.build_run(rng, kind, index, start + timedelta(minutes=index))
        for index, kind in enumerate(["past_window"] * failing + ["ok"] * passing)
    ]
    feedback = {}
    for payload in payloads:
        payload.update(
            agent=agent.slug,
            system=agent.stable_version.system_prompt,
            tools=demo.TOOLS,
            model=agent.model,
        )
        if "feedback" in payload:
            feedback[payload["external_id"]] = payload.pop("feedback")
    results = ingest_runs(workspace=agent.workspace, items=payloads)
    runs = Run.objects.in_bulk([r.id for r in results])
    for result in results:
        if result.external_id in feedback:
            services.add_feedback(
                run=runs[result.id], source="human", **feedback[result.external_id]
            )
    return agent


def assert_calls_accounted(calls: list[ModelCall]) -> None:
    assert calls, "no model call reached the local model"
    for call in calls:
        assert call.backend == "local"
        assert call.cost_usd == 0
        # Each call either answered (and spent tokens) or failed with its reason recorded.
        assert (call.ok and call.output_tokens > 0) or call.error, call.__dict__


def test_a_dream_cycle_runs_end_to_end_on_the_local_model(
    client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    agent = small_agent(failing=5, passing=2)
    cycle = cycles.start_cycle(agent=agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    with django_capture_on_commit_callbacks(execute=True):
        cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()

    print(f"local model cycle: {cycle.status} {cycle.error!r}; report {cycle.report}")
    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error
    calls = list(ModelCall.objects.filter(cycle=cycle))
    assert_calls_accounted(calls)
    report = cycle.report
    # Every unusable answer has its reason in the report (the same text as on its ModelCall).
    reasons = [r["reason"] for r in report.get("refused_answers", [])] + [
        d["reason"] for d in report["not_drafted"]
    ]
    for call in calls:
        if call.error:
            assert any(call.error in reason for reason in reasons), (call.error, reasons)
    drafts = report["progress"]["drafts"]
    assert drafts, "the cycle drafted nothing and said nothing"
    for draft in drafts.values():
        assert draft["status"] in ("valid", "rejected", "skipped")
        assert draft["status"] == "valid" or draft["reason"]
    # Guards ran on every proposal; the page shows each rejection's reason.
    for proposal in Proposal.objects.filter(cycle=cycle):
        assert proposal.metadata.get("guarded") is True
    client.force_login(agent.workspace.memberships.get(user__username="demo").user)
    html = client.get(f"/dreams/{cycle.pk}/").content.decode()
    assert "local model" in html
    from django.utils.html import escape

    for item in report["not_drafted"]:
        assert escape(" ".join(item["reason"].split())) in html, item["reason"]


def test_an_experiment_on_a_seeded_proposal_runs_end_to_end_on_the_local_model(
    client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    agent = small_agent(failing=1, passing=1)
    stable = agent.stable_version
    candidate = services.create_config_version(
        agent=agent,
        system_prompt=stable.system_prompt + WINDOW_GUIDANCE,
        memory_documents=stable.memory_documents,
        tools=stable.tools,
        model=stable.model,
        parent=stable,
    )
    target = [r.pk for r in Run.objects.filter(agent=agent) if "past_window" in r.tags]
    proposal = create_proposal(
        agent=agent,
        base_version=stable,
        candidate_version=candidate,
        title="Check the refund window",
        metadata={"target_run_ids": target},
    )
    with django_capture_on_commit_callbacks(execute=True):
        experiment = start_proposal_experiment(proposal)
    experiment.refresh_from_db()

    print(f"local model experiment: {experiment.status} {experiment.error!r} {experiment.stats}")
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    replays = list(Replay.objects.filter(experiment=experiment))
    assert replays
    for replay in replays:
        # Each replay finished with a verdict, or failed with its reason recorded.
        assert replay.status in (Replay.Status.DONE, Replay.Status.FAILED)
        assert replay.verdict or replay.reason, replay.__dict__
    assert_calls_accounted(list(ModelCall.objects.filter(experiment=experiment)))
    client.force_login(agent.workspace.memberships.get(user__username="demo").user)
    assert client.get(f"/proposals/{proposal.pk}/").status_code == 200
