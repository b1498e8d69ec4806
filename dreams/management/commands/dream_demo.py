"""Run one dream cycle on the demo agent so the review queue holds real proposals (after seed_demo)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from dreams import cycles, demo


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
        try:
            cycle = demo.dream_once(agent, force=options["force"])
        except cycles.CycleNotStarted as exc:
            raise CommandError(str(exc)) from exc
        if cycle is None:
            self.stdout.write(f"Agent {agent.slug} already has a finished dream cycle; skipping.")
            return
        self.stdout.write(self.style.SUCCESS(demo.summary(cycle)))
