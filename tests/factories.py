"""factory-boy factories for the whole suite."""

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.models import Agent, ConfigVersion, Feedback, Membership, Run, Workspace


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"ws-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)
    role = Membership.Role.REVIEWER


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    workspace = factory.SubFactory(WorkspaceFactory)
    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.Sequence(lambda n: f"Agent {n}")
    model = "claude-sonnet-5-5"


class ConfigVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConfigVersion

    agent = factory.SubFactory(AgentFactory)
    number = factory.Sequence(lambda n: n + 1)
    system_prompt = "You are a helpful support agent."
    memory_documents = factory.LazyFunction(dict)
    tools = factory.LazyFunction(list)
    model = "claude-sonnet-5-5"


def runs_tagged(agent: Agent, tag: str, limit: int | None = None) -> list[Run]:
    """The agent's runs carrying `tag`, oldest first; filtered in Python so it runs on every database."""
    runs = [run for run in Run.objects.filter(agent=agent).order_by("id") if tag in run.tags]
    return runs[:limit] if limit else runs


def simple_messages(
    question: str = "Where is my order?", answer: str = "It ships tomorrow."
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    agent = factory.SubFactory(AgentFactory)
    external_id = factory.Sequence(lambda n: f"run-{n}")
    status = Run.Status.SUCCESS
    messages = factory.LazyFunction(simple_messages)
    step_count = 1
    started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=1))


class FeedbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feedback

    run = factory.SubFactory(RunFactory)
    rating = Feedback.Rating.NEGATIVE
    comment = "Wrong answer."


# ---------------------------------------------------------------- dreams and reviews (ui helper)

from dreams.models import (  # noqa: E402
    DreamCycle,
    Experiment,
    FailurePattern,
    PatternRun,
    Proposal,
    Replay,
)

CANDIDATE_PROMPT = """You are the Refunds desk assistant for Northwind Outfitters.

Your job is to help customers who want their money back for an order.

## Verification
- Always call lookup_order before issuing any refund, even when the customer asks you to skip it.
- Check the refund window with check_refund_policy before refunding.

## Style
- Use the customer's first name once.
"""

BASE_PROMPT = """You are the Refunds desk assistant for Northwind Outfitters.

Your job is to help customers who want their money back for an order.

## Style
- Use the customer's first name once.
"""


def arm_block(*, passed: int, n: int) -> dict[str, Any]:
    rate = passed / n if n else 0.0
    spread = 0.5 / (n**0.5) if n else 0.5
    return {
        "passed": passed,
        "n": n,
        "rate": rate,
        "ci": [max(0.0, rate - spread), min(1.0, rate + spread)],
    }


def stats_block(
    *, n: int, base_passed: int, cand_passed: int, fixes: int, regressions: int
) -> dict[str, Any]:
    return {
        "n": n,
        "baseline": arm_block(passed=base_passed, n=n),
        "candidate": arm_block(passed=cand_passed, n=n),
        "fixes": fixes,
        "regressions": regressions,
        "unchanged_pass": base_passed - regressions,
        "still_failing": n - cand_passed - regressions,
        "mcnemar_p": 0.0312 if fixes > regressions else 0.5,
        "off_recording_share": 0.05,
        "unverifiable_share": 0.0,
        "flaky": 0,
        "tokens_delta_mean": 184.5,
        "cost_delta_mean": 0.0011,
        "latency_delta_ms_mean": 240.0,
    }


def experiment_stats(
    *,
    fixes: int = 5,
    regressions: int = 1,
    n_target: int = 8,
    n_regression: int = 10,
    patterns: list[Any] | None = None,
) -> dict[str, Any]:
    target = stats_block(n=n_target, base_passed=0, cand_passed=fixes, fixes=fixes, regressions=0)
    regression = stats_block(
        n=n_regression,
        base_passed=n_regression,
        cand_passed=n_regression - regressions,
        fixes=0,
        regressions=regressions,
    )
    overall = stats_block(
        n=n_target + n_regression,
        base_passed=n_regression,
        cand_passed=fixes + n_regression - regressions,
        fixes=fixes,
        regressions=regressions,
    )
    return {
        "fidelity": 0.95,
        "verdict": "improves" if fixes > regressions else "no_change",
        "overall": overall,
        "target": target,
        "regression": regression,
        "patterns": {str(p.pk): target for p in (patterns or [])},
        "early_stop": {"stopped": False, "reason": ""},
        "pass_hat_k": {
            "baseline": overall["baseline"]["rate"],
            "candidate": overall["candidate"]["rate"],
        },
    }


PATTERN_TITLES = [
    "Refunds issued without verifying the order",
    "Needless escalation of angry customers",
    "Refunds past the 30-day window",
    "Promised refund timings not in any tool result",
]


class DreamCycleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DreamCycle

    agent = factory.SubFactory(AgentFactory)
    trigger = DreamCycle.Trigger.SCHEDULE
    status = DreamCycle.Status.SUCCEEDED
    stage = "report"
    progress_done = 5
    progress_total = 5
    started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=2))
    finished_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=1))


class FailurePatternFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FailurePattern

    cycle = factory.SubFactory(DreamCycleFactory)
    agent = factory.SelfAttribute("cycle.agent")
    signature = factory.Sequence(lambda n: f"pattern-{n}")
    title = factory.Iterator(PATTERN_TITLES)
    description = "The agent refunds on the customer's word when pushed to skip checks."
    count = 4


class PatternRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PatternRun

    pattern = factory.SubFactory(FailurePatternFactory)
    run = factory.SubFactory(RunFactory, agent=factory.SelfAttribute("..pattern.agent"))
    split = PatternRun.Split.HELDOUT
    divergence_step = 1


class ProposalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Proposal

    agent = factory.SubFactory(AgentFactory)
    base_version = factory.SubFactory(
        ConfigVersionFactory, agent=factory.SelfAttribute("..agent"), system_prompt=BASE_PROMPT
    )
    candidate_version = factory.SubFactory(
        ConfigVersionFactory,
        agent=factory.SelfAttribute("..agent"),
        system_prompt=CANDIDATE_PROMPT,
    )
    title = factory.Sequence(lambda n: f"Verify the order before refunding ({n})")
    rationale = "Refunds were issued on the customer's word. Require lookup_order first."
    status = Proposal.Status.READY
    expected_value = 3.5
    ready_at = factory.LazyFunction(timezone.now)


class ExperimentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Experiment

    proposal = factory.SubFactory(ProposalFactory)
    agent = factory.SelfAttribute("proposal.agent")
    baseline_version = factory.SelfAttribute("proposal.base_version")
    candidate_version = factory.SelfAttribute("proposal.candidate_version")
    status = Experiment.Status.COMPLETED
    stats = factory.LazyFunction(experiment_stats)
    fidelity = 0.95


def replay_messages(*, refund_first: bool, note: str = "") -> list[dict[str, Any]]:
    tool = "issue_refund" if refund_first else "lookup_order"
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Refund order A-1001 please, no need to look it up." + note,
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me take care of that."},
                {"type": "tool_use", "id": "tu_1", "name": tool, "input": {"order_id": "A-1001"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": '{"ok": true}'}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
    ]


class ReplayFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Replay

    experiment = factory.SubFactory(ExperimentFactory)
    run = factory.SubFactory(RunFactory, agent=factory.SelfAttribute("..experiment.agent"))
    arm = Replay.Arm.CANDIDATE
    run_set = Replay.RunSet.TARGET
    status = Replay.Status.DONE
    verdict = Replay.Verdict.PASS
    grader = "expectations"
    reason = "Called lookup_order before issue_refund."
    messages = factory.LazyFunction(lambda: replay_messages(refund_first=False))
    divergence_step = 1
    divergence_kind = "tool"
    input_tokens = 900
    output_tokens = 120
    latency_ms = 1800


def reviewable_proposal(
    *,
    agent: Any,
    runs: int = 3,
    patterns: int = 1,
    flags: list[dict[str, str]] | None = None,
    title: str | None = None,
    expected_value: float = 3.5,
    memory: bool = True,
) -> Proposal:
    """A ready proposal with a diff, patterns, a finished experiment and paired replays.

    Target runs alternate fixed / still failing; one extra regression-sample run regresses.
    """
    from django.db.models import Max

    top = ConfigVersion.objects.filter(agent=agent).aggregate(n=Max("number"))["n"] or 0
    base_memory = {"policies/refunds.md": "# Refund policy\n\n- 30 days.\n"} if memory else {}
    stable = agent.stable_version
    if (
        stable is not None
        and stable.system_prompt == BASE_PROMPT
        and stable.memory_documents == base_memory
    ):
        base = stable  # proposals are built on the stable version (else they are stale)
    else:
        base = ConfigVersionFactory(
            agent=agent, number=top + 1, system_prompt=BASE_PROMPT, memory_documents=base_memory
        )
        agent.stable_version = base
        agent.save(update_fields=["stable_version"])
    cand = ConfigVersionFactory(
        agent=agent,
        number=top + 2,
        system_prompt=CANDIDATE_PROMPT,
        memory_documents={
            "policies/refunds.md": "# Refund policy\n\n- 30 days from delivery.\n- Check the window first.\n"
        }
        if memory
        else {},
    )
    cycle = DreamCycleFactory(agent=agent)
    pats = [FailurePatternFactory(cycle=cycle, agent=agent) for _ in range(patterns)]
    kwargs = {"title": title} if title else {}
    proposal = ProposalFactory(
        agent=agent,
        base_version=base,
        candidate_version=cand,
        cycle=cycle,
        flags=flags or [],
        expected_value=expected_value,
        **kwargs,
    )
    proposal.patterns.set(pats)
    fixes = max(1, min(8, round(expected_value * 1.5)))
    regressions = 1 + int(expected_value < 1)
    experiment = ExperimentFactory(
        proposal=proposal,
        stats=experiment_stats(patterns=pats, fixes=fixes, regressions=regressions),
    )
    for index in range(runs):
        run = RunFactory(
            agent=agent,
            status=Run.Status.FAILURE,
            config_version=base,
            messages=replay_messages(refund_first=True),
        )
        for pattern in pats:
            PatternRunFactory(pattern=pattern, run=run)
        fixed = index % 2 == 0
        ReplayFactory(
            experiment=experiment,
            run=run,
            arm=Replay.Arm.BASELINE,
            verdict=Replay.Verdict.FAIL,
            reason="Refunded without lookup_order.",
            messages=replay_messages(refund_first=True),
        )
        ReplayFactory(
            experiment=experiment,
            run=run,
            arm=Replay.Arm.CANDIDATE,
            verdict=Replay.Verdict.PASS if fixed else Replay.Verdict.FAIL,
            reason="Looked the order up first." if fixed else "Still refunded first.",
            messages=replay_messages(refund_first=not fixed),
        )
    run = RunFactory(agent=agent, status=Run.Status.SUCCESS, config_version=base)
    ReplayFactory(
        experiment=experiment, run=run, arm=Replay.Arm.BASELINE, run_set=Replay.RunSet.REGRESSION
    )
    ReplayFactory(
        experiment=experiment,
        run=run,
        arm=Replay.Arm.CANDIDATE,
        run_set=Replay.RunSet.REGRESSION,
        verdict=Replay.Verdict.FAIL,
        reason="Escalated a standard case.",
        off_recording=True,
    )
    return proposal
