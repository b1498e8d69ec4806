"""Run one dream cycle on the demo agent so the review queue holds real proposals (after seed_demo)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from dreams import cycles
from dreams.models import DreamCycle


class Command(BaseCommand):
    help = (
        "Run one dream cycle (with replays) on the seeded Refunds desk agent; skipped if one ran."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--agent", default="refunds-desk")
        parser.add_argument("--force", action="store_true", help="run another cycle anyway")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).select_related("workspace").first()
        if agent is None:
            raise CommandError(f"No agent {options['agent']!r}; run seed_demo first.")
        done = DreamCycle.objects.filter(agent=agent, status=DreamCycle.Status.SUCCEEDED)
        if done.exists() and not options["force"]:
            self.stdout.write(f"Agent {agent.slug} already has a finished dream cycle; skipping.")
            return
        try:
            cycle = cycles.start_cycle(
                agent=agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False
            )
        except cycles.CycleNotStarted as exc:
            raise CommandError(str(exc)) from exc
        cycles.run_cycle(cycle_id=cycle.pk)
        cycle.refresh_from_db()
        report = cycle.report or {}
        self.stdout.write(
            self.style.SUCCESS(
                f"Dream cycle {cycle.pk}: {cycle.status}; "
                f"{len(report.get('patterns', []))} patterns, "
                f"{len(report.get('suggestions', []))} proposals, {cycle.tokens_used:,} tokens."
            )
        )
