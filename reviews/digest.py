"""The daily digest e-mail: corrected failures and proposals waiting for review, per workspace.

Sent with Django's mail backend (console by default) to each workspace's reviewers and admins.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.utils import timezone

from agents.models import Membership, Workspace
from dreams import reports
from dreams.models import DreamCycle, Proposal


def digest_for(*, workspace: Workspace, now: datetime) -> dict[str, Any] | None:
    """Corrected failures and pending reviews of the last 24 hours; None when there is nothing."""
    since = now - timedelta(days=1)
    decided = (
        Proposal.objects.filter(
            agent__workspace=workspace,
            status__in=[
                Proposal.Status.APPROVED,
                Proposal.Status.ROLLING_OUT,
                Proposal.Status.ROLLED_OUT,
            ],
            decided_at__gte=since,
        )
        .select_related("agent")
        .prefetch_related("experiments")
        .order_by("-decided_at")
    )
    corrected = []
    for proposal in decided:
        metrics = reports.experiment_metrics(proposal) or {}
        fixes = (metrics.get("target") or {}).get("fixes") or 0
        corrected.append({"proposal": proposal, "fixes": fixes})
    pending = list(
        Proposal.objects.filter(agent__workspace=workspace, status=Proposal.Status.READY)
        .select_related("agent")
        .order_by("-expected_value", "ready_at")
    )
    cycles = list(
        DreamCycle.objects.filter(agent__workspace=workspace, finished_at__gte=since)
        .select_related("agent")
        .order_by("-finished_at")
    )
    if not (corrected or pending or cycles):
        return None
    return {"corrected": corrected, "pending": pending, "cycles": cycles}


def render_digest(*, workspace: Workspace, digest: dict[str, Any]) -> tuple[str, str]:
    fixed = sum(item["fixes"] for item in digest["corrected"])
    subject = (
        f"[Reverie] {workspace.name}: {fixed} failures corrected, "
        f"{len(digest['pending'])} proposals waiting for review"
    )
    lines = [f"Reverie daily digest for {workspace.name}", ""]
    lines.append(f"Corrected failures (approved in the last 24 hours): {fixed}")
    for item in digest["corrected"]:
        p = item["proposal"]
        lines.append(
            f"  - #{p.pk} {p.title} ({p.agent.name}): {item['fixes']} held-out failures fixed"
        )
    lines += ["", f"Waiting for review: {len(digest['pending'])}"]
    for p in digest["pending"][:10]:
        lines.append(
            f"  - #{p.pk} {p.title} ({p.agent.name}) {settings.REVERIE_BASE_URL}/proposals/{p.pk}"
        )
    lines += ["", f"Dream cycles finished: {len(digest['cycles'])}"]
    for c in digest["cycles"][:10]:
        lines.append(f"  - cycle {c.pk} of {c.agent.name}: {c.status}")
    return subject, "\n".join(lines) + "\n"


def send_daily_digest(*, now: datetime | None = None) -> int:
    """E-mail each workspace's reviewers and admins; returns the number of e-mails sent."""
    now = now or timezone.now()
    sent = 0
    for workspace in Workspace.objects.order_by("id"):
        digest = digest_for(workspace=workspace, now=now)
        if digest is None:
            continue
        recipients = sorted(
            {
                m.user.email
                for m in Membership.objects.filter(workspace=workspace)
                .filter(Q(role=Membership.Role.ADMIN) | Q(role=Membership.Role.REVIEWER))
                .select_related("user")
                if m.user.email
            }
        )
        if not recipients:
            continue
        subject, body = render_digest(workspace=workspace, digest=digest)
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
        sent += 1
    return sent
