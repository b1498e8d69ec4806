"""`manage.py simulate_traffic`: production-like traffic for one agent (see agents/traffic.py)."""

import random
from typing import Any

import httpx2 as httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents import services, traffic
from agents.models import Agent, ApiKey


def in_process_client(*, key: str) -> httpx.Client:
    """An httpx client that calls this process's WSGI app (no server, no port)."""
    from django.core.wsgi import get_wsgi_application

    scheme = "https" if settings.SECURE_SSL_REDIRECT else "http"
    return httpx.Client(
        transport=httpx.WSGITransport(app=get_wsgi_application()),
        base_url=f"{scheme}://127.0.0.1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def local_ingest_key(agent_slug: str) -> str:
    """Create an ingest key in the agent's workspace (this install's database)."""
    agent = Agent.objects.select_related("workspace").filter(slug=agent_slug).first()
    if agent is None:
        raise CommandError(f"No agent {agent_slug!r} in this database.")
    _, raw = services.create_api_key(
        workspace=agent.workspace, name="traffic simulator", scope=ApiKey.Scope.INGEST
    )
    return raw


class Command(BaseCommand):
    help = (
        "Simulate an agent's production traffic: config calls with sticky keys and runs reported "
        "for each arm, the candidate better or worse than stable by --margin. Against a URL with "
        "--url and --key (any install: a rollout rehearsal; runs are tagged 'simulated'), or "
        "in-process (this database) by default."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--agent", default="refunds-desk", help="agent slug")
        parser.add_argument("--url", default="", help="Reverie's base URL; empty = in-process")
        parser.add_argument("--key", default="", help="an ingest API key (created if empty)")
        parser.add_argument("--rate", type=float, default=30.0, help="runs a second")
        parser.add_argument(
            "--margin",
            type=float,
            default=0.05,
            help="candidate success rate minus stable's, e.g. 0.05 or -0.3",
        )
        parser.add_argument("--success", type=float, default=0.85, help="stable's success rate")
        parser.add_argument(
            "--error-share", type=float, default=0.3, help="share of unsuccessful runs that error"
        )
        parser.add_argument("--keys", type=int, default=500, help="distinct sticky users")
        parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = until ^C")
        parser.add_argument("--runs", type=int, default=0, help="stop after this many runs")
        parser.add_argument(
            "--no-wait", action="store_true", help="send each second's runs at once, no sleeping"
        )
        parser.add_argument("--report-every", type=float, default=5.0, help="seconds")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["success"] <= 1 or not 0 <= options["error_share"] <= 1:
            raise CommandError("--success and --error-share are shares from 0 to 1.")
        if options["rate"] <= 0:
            raise CommandError("--rate must be positive.")
        key = options["key"]
        if options["url"]:
            if not key:
                raise CommandError("--url needs --key (an ingest key of that install).")
            client = httpx.Client(
                base_url=options["url"].rstrip("/"),
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
        else:
            client = in_process_client(key=key or local_ingest_key(options["agent"]))
        simulator = traffic.Simulator(
            client=client,
            agent=options["agent"],
            outcomes=traffic.Outcomes(
                success=options["success"],
                margin=options["margin"],
                error_share=options["error_share"],
            ),
            keys=options["keys"],
            rng=random.Random(options["seed"]),
        )
        self.stdout.write(
            f"Simulating {options['rate']:g} runs/s for {options['agent']}: stable succeeds "
            f"{simulator.outcomes.success_rate('stable'):.0%}, the canary "
            f"{simulator.outcomes.success_rate('canary'):.0%}."
        )
        try:
            traffic.run(
                simulator,
                rate=options["rate"],
                duration=options["duration"],
                total=options["runs"],
                wait=not options["no_wait"],
                report_every=options["report_every"],
                out=self.stdout.write,
            )
        except KeyboardInterrupt:
            self.stdout.write(f"stopped | {simulator.summary()}")
        except httpx.HTTPStatusError as exc:
            body = exc.response.text[:300]
            raise CommandError(
                f"{exc.request.url} answered {exc.response.status_code}: {body}"
            ) from exc
        finally:
            client.close()
