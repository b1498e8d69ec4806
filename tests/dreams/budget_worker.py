"""A stand-in worker process for the cross-worker budget tests: its own interpreter, its own
BudgetGuard and its own database connection, pointed at the test database by DATABASE_URL.

    python -m tests.dreams.budget_worker spend <agent_id> <estimate> <tokens> <start_at>
    python -m tests.dreams.budget_worker slots <agent_id> <tries> <start_at>
    python -m tests.dreams.budget_worker hold <agent_id> <estimate>

`spend` reserves and records calls until its budget refuses one and prints how many it made;
`slots` takes replay slots (never giving them back) and prints how many it got; both wait for
the wall-clock `start_at` first so the two processes race. `hold` reserves once, takes a slot,
prints "held" and sleeps until it is killed.
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from agents.models import Agent
    from dreams.llm import BudgetExceeded, CallContext
    from dreams.llm.accounting import Accountant
    from dreams.llm.budget import BudgetGuard

    mode, agent_id = argv[0], int(argv[1])
    agent = Agent.objects.get(pk=agent_id)
    guard = BudgetGuard()
    context = CallContext(agent, "replay")
    if mode == "spend":
        estimate, tokens, start_at = int(argv[2]), int(argv[3]), float(argv[4])
        accountant = Accountant(backend="simulated", guard=guard)
        time.sleep(max(0.0, start_at - time.time()))
        made = 0
        while True:
            try:
                guard.reserve(context, estimate=estimate)
            except BudgetExceeded:
                break
            accountant.record(
                context,
                model="claude-haiku-5-5",
                usage={"input_tokens": tokens},
                latency_ms=1,
                release=estimate,
            )
            made += 1
        print(made, flush=True)
    elif mode == "slots":
        tries, start_at = int(argv[2]), float(argv[3])
        time.sleep(max(0.0, start_at - time.time()))
        print(sum(guard.take_slot(agent) for _ in range(tries)), flush=True)
    elif mode == "hold":
        guard.reserve(context, estimate=int(argv[2]))
        assert guard.take_slot(agent)
        print("held", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1:])
