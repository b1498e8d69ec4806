"""Import Claude Code / Agent SDK session transcripts (JSONL files) as runs of one agent."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.claude_code import run_item
from agents.ingest import IngestError, ingest_runs
from agents.models import Workspace


class Command(BaseCommand):
    help = "Store Claude Code session transcripts (~/.claude/projects/*/<session>.jsonl) as runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument("--agent", required=True, help="agent slug")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"no workspace {options['workspace']!r}")
        items = []
        for path in options["files"]:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"{path}: {exc}") from exc
            # The file is named after the session: re-importing it is a no-op.
            items.append(
                run_item(
                    agent=options["agent"], external_id=f"claude-code:{path.stem}", transcript=text
                )
            )
        try:
            results = ingest_runs(workspace=workspace, items=items)
        except IngestError as exc:
            problems = "; ".join(
                f"{options['files'][int(k[5 : k.index(']')])]}: {k.split('.', 1)[-1]}: {v[0]}"
                for k, v in exc.fields.items()
            )
            raise CommandError(problems) from exc
        created = sum(r.created for r in results)
        self.stdout.write(f"{created} run(s) created, {len(results) - created} already stored")
