"""Seed the demo's IT access desk (after seed_demo's workspace and users): see dreams.demo_desk."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import Workspace
from dreams.demo_desk.seed import DEFAULT_SANDBOX_URL, seed_access_desk


class Command(BaseCommand):
    help = "Create the IT access desk agent, its runs and a proposal replayed in its MCP sandbox."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--workspace", default="northwind")
        parser.add_argument("--sandbox-url", default=DEFAULT_SANDBOX_URL)
        parser.add_argument("--runs", type=int, default=48)

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"No workspace {options['workspace']!r}; run seed_demo first.")
        line = seed_access_desk(
            workspace=workspace, sandbox_url=options["sandbox_url"], runs=options["runs"]
        )
        self.stdout.write(self.style.SUCCESS(line))
