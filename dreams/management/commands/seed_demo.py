"""Seed the demo workspace, users, the Refunds desk agent and its recorded runs (idempotent)."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents import demo, services
from agents.ingest import ingest_runs
from agents.models import Agent, Membership, Run, Workspace
from dreams.cycles import CycleNotStarted
from dreams.demo import dream_once, summary

DEMO_USERS = [
    ("demo", "reverie-demo", Membership.Role.ADMIN),
    ("riley", "reverie-demo", Membership.Role.REVIEWER),
    ("vic", "reverie-demo", Membership.Role.VIEWER),
]


class Command(BaseCommand):
    help = "Create the demo workspace, users (demo / reverie-demo), the Refunds desk agent and ~300 runs."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--runs", type=int, default=300)
        parser.add_argument(
            "--no-dream",
            action="store_true",
            help="skip the dream cycle that fills the review queue with real proposals",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        with transaction.atomic():
            workspace, _ = Workspace.objects.get_or_create(
                slug="northwind", defaults={"name": "Northwind Outfitters"}
            )
            for username, password, role in DEMO_USERS:
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={
                        "is_staff": role == Membership.Role.ADMIN,
                        "is_superuser": role == Membership.Role.ADMIN,
                    },
                )
                if created:
                    user.set_password(password)
                    user.save()
                Membership.objects.get_or_create(
                    user=user, workspace=workspace, defaults={"role": role}
                )
            agent = Agent.objects.filter(workspace=workspace, slug="refunds-desk").first()
            if agent is None:
                agent = services.create_agent(
                    workspace=workspace,
                    slug="refunds-desk",
                    name="Refunds desk",
                    description="Handles refund requests for Northwind Outfitters' web shop.",
                    model="claude-sonnet-5-5",
                    failure_threshold=25,
                    sandbox_tools={
                        "lookup_order": "agents.demo.sandbox_lookup_order",
                        "check_refund_policy": "agents.demo.sandbox_check_refund_policy",
                    },
                    write_tools=["issue_refund", "escalate_to_human"],
                    rollout_stages=[5, 25, 100],
                )
                version = services.create_config_version(
                    agent=agent,
                    system_prompt=demo.SYSTEM_PROMPT,
                    memory_documents=demo.MEMORY_DOCUMENTS,
                    tools=demo.TOOLS,
                    model=agent.model,
                    source="import",
                    note="Initial production config",
                )
                services.set_stable_version(agent=agent, version=version)
                agent.refresh_from_db()
        existing = Run.objects.filter(agent=agent).count()
        payloads = demo.generate_runs(options["runs"])
        feedback = {}
        for payload in payloads:
            payload["agent"] = agent.slug
            payload["system"] = agent.stable_version.system_prompt if agent.stable_version else ""
            payload["tools"] = demo.TOOLS
            payload["model"] = agent.model
            if "feedback" in payload:
                feedback[payload["external_id"]] = payload.pop("feedback")
        results = ingest_runs(workspace=workspace, items=payloads)
        created_ids = {r.external_id: r.id for r in results if r.created}
        runs = Run.objects.in_bulk(created_ids.values())
        for external_id, run_id in created_ids.items():
            if external_id in feedback:
                services.add_feedback(run=runs[run_id], source="human", **feedback[external_id])
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready: workspace {workspace.name!r}, agent {agent.slug!r}, {existing + len(created_ids)} runs ({len(created_ids)} new). Log in as demo / reverie-demo."
            )
        )
        if not options["no_dream"]:
            try:
                cycle = dream_once(agent)
            except CycleNotStarted as exc:
                raise CommandError(str(exc)) from exc
            if cycle is None:
                self.stdout.write(f"Agent {agent.slug} already has a finished dream cycle.")
            else:
                self.stdout.write(self.style.SUCCESS(summary(cycle)))
