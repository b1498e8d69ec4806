"""`manage.py rundemo`: the embedded demo with the loop closed — the web server, beat's periodic
work in-process (eager tasks), a background thread for experiments and dream cycles, and simulated production traffic for the demo agent."""

import random
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from agents import traffic
from agents.management.commands.simulate_traffic import in_process_client, local_ingest_key
from config.celery import start_embedded_beat, start_embedded_worker


class Command(BaseCommand):
    help = (
        "Serve the demo with beat's schedule running in this process and simulated traffic "
        "(config calls and runs for each arm), so rollouts advance and bad canaries halt live."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--agent", default="refunds-desk")
        parser.add_argument("--rate", type=float, default=30.0, help="simulated runs a second")
        parser.add_argument(
            "--margin",
            type=float,
            default=0.05,
            help="canary success rate minus stable's (negative: a bad canary that halts)",
        )
        parser.add_argument("--no-traffic", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            raise CommandError(
                "rundemo is the embedded mode's demo; with REDIS_URL run `celery -A config worker` "
                "and `celery -A config beat`, and `manage.py simulate_traffic --url … --key …`."
            )
        start_embedded_beat()
        # Experiments and dream cycles run on a background thread, as a worker would run them:
        # saving an edit returns at once and its page polls the replays' progress.
        start_embedded_worker()
        self.stdout.write(
            f"Beat's schedule runs in-process: rollouts are checked every "
            f"{settings.REVERIE_ROLLOUT_CHECK_SECONDS} s; stages need "
            f"{settings.REVERIE_ROLLOUT_MIN_RUNS} canary runs and "
            f"{settings.REVERIE_ROLLOUT_MIN_MINUTES} min."
        )
        if not options["no_traffic"]:
            simulator = traffic.Simulator(
                client=in_process_client(key=local_ingest_key(options["agent"])),
                agent=options["agent"],
                outcomes=traffic.Outcomes(margin=options["margin"]),
                rng=random.Random(),
            )
            worker = threading.Thread(
                target=traffic.run,
                kwargs={
                    "simulator": simulator,
                    "rate": options["rate"],
                    "report_every": 15.0,
                    "out": lambda line: self.stdout.write(f"[traffic] {line}"),
                },
                name="traffic",
                daemon=True,
            )
            worker.start()
            self.stdout.write(
                f"Simulated traffic: {options['rate']:g} runs/s for {options['agent']}, the canary "
                f"{options['margin']:+.0%} against stable (--margin; negative halts by itself)."
            )
        call_command("runserver", options["addrport"], use_reloader=False)
