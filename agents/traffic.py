"""A traffic simulator: production-like calls to the config endpoint and runs reported per arm.

Each simulated conversation belongs to one of `keys` users (the sticky routing key). It asks
`GET /api/v1/agents/<slug>/config?key=<user>` (revalidating with `If-None-Match`, as a real
client does), runs on the version it was given, and reports the run with that version's number
(`POST /api/v1/runs`, one batch a tick). The candidate arm succeeds `margin` more (or less) often
than stable, so a rollout can be watched passing its stages or halting by itself. Everything goes
over the public HTTP API, to a URL or in-process through the WSGI app (the demo), so the same
command rehearses a rollout on a real install: its runs are tagged `simulated`.
"""

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

ARMS = ("stable", "canary")


@dataclass
class Outcomes:
    """Outcome rates: stable succeeds `success` of the time, the canary `success + margin`;
    `error_share` of the rest are errors (a tool or model failure), the others plain failures."""

    success: float = 0.85
    margin: float = 0.0
    error_share: float = 0.3

    def success_rate(self, arm: str) -> float:
        rate = self.success + (self.margin if arm == "canary" else 0.0)
        return min(1.0, max(0.0, rate))

    def draw(self, arm: str, rng: random.Random) -> str:
        if rng.random() < self.success_rate(arm):
            return "success"
        return "error" if rng.random() < self.error_share else "failure"


@dataclass
class ArmTally:
    runs: int = 0
    success: int = 0
    error: int = 0
    version: int | None = None

    def line(self, arm: str) -> str:
        if not self.runs:
            return f"{arm}: 0 runs"
        return (
            f"{arm} v{self.version}: {self.runs} runs, {self.success / self.runs:.0%} ok, "
            f"{self.error / self.runs:.0%} errors"
        )


@dataclass
class Simulator:
    """One agent's simulated production traffic through an httpx client with a bearer key."""

    client: httpx.Client
    agent: str
    outcomes: Outcomes
    keys: int = 500
    rng: random.Random = field(default_factory=random.Random)
    tallies: dict[str, ArmTally] = field(default_factory=lambda: {a: ArmTally() for a in ARMS})
    config_calls: int = 0
    not_modified: int = 0
    paused: bool = False
    _cache: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # key → etag, arm, v
    _carry: float = 0.0

    def route(self, key: str) -> tuple[str, int] | None:
        """The (arm, version number) the config endpoint gives `key`; None while paused."""
        headers = {}
        cached = self._cache.get(key)
        if cached:
            headers["If-None-Match"] = cached[0]
        response = self.client.get(
            f"/api/v1/agents/{self.agent}/config", params={"key": key}, headers=headers
        )
        self.config_calls += 1
        if response.status_code == 304 and cached:
            self.not_modified += 1
            return cached[1], cached[2]
        if response.status_code == 423:
            self.paused = True
            return None
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            return None
        response.raise_for_status()
        body = response.json()
        self._cache[key] = (response.headers.get("ETag", ""), body["arm"], body["version"])
        self.paused = False
        return body["arm"], body["version"]

    def run_payload(self, *, key: str, arm: str, version: int) -> dict[str, Any]:
        status = self.outcomes.draw(arm, self.rng)
        tally = self.tallies[arm]
        tally.runs += 1
        tally.version = version
        tally.success += status == "success"
        tally.error += status == "error"
        reason = {
            "success": "resolved",
            "failure": "simulated: the customer's problem was not solved",
            "error": "simulated: a tool call timed out",
        }[status]
        return {
            "agent": self.agent,
            "external_id": f"sim-{uuid.uuid4().hex}",
            "config_version": version,
            "status": status,
            "outcome_reason": reason,
            "latency_ms": self.rng.randint(400, 4000),
            "tags": ["simulated", f"arm:{arm}"],
            "metadata": {"simulated": True, "routing_key": key},
            "messages": [
                {"role": "user", "content": "Hi, I'd like a refund for my last order."},
                {"role": "assistant", "content": "Let me look into that for you."},
            ],
        }

    def tick(self, runs: int) -> int:
        """Route and report `runs` conversations (one batch); the number reported."""
        payloads = []
        for _ in range(runs):
            key = f"user-{self.rng.randrange(self.keys):05d}"
            routed = self.route(key)
            if routed is None:
                continue
            payloads.append(self.run_payload(key=key, arm=routed[0], version=routed[1]))
        if payloads:
            response = self.client.post("/api/v1/runs", json={"runs": payloads})
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                return 0
            response.raise_for_status()
        return len(payloads)

    def due(self, rate: float, seconds: float) -> int:
        """Whole runs due after `seconds` at `rate` a second (fractions carry over)."""
        self._carry += rate * seconds
        whole = int(self._carry)
        self._carry -= whole
        return whole

    def summary(self) -> str:
        return " | ".join(self.tallies[arm].line(arm) for arm in ARMS)


def run(
    simulator: Simulator,
    *,
    rate: float,
    duration: float = 0.0,
    total: int = 0,
    wait: bool = True,
    report_every: float = 5.0,
    out: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send traffic at `rate` runs a second for `duration` seconds or `total` runs (0 = no
    bound on that side), printing a line per arm every `report_every` seconds and whenever the
    canary version appears or disappears (a stage started, a halt, a completed rollout)."""
    started = last = last_report = clock()
    sent = 0
    serving: int | None = None  # the canary version seen in recent runs
    canary_seen_runs, canary_seen_tick, ticks = 0, 0, 0
    quiet = 10  # ticks (about seconds) without a canary run before saying it is gone
    while not stop():
        now = clock()
        if duration and now - started >= duration:
            break
        if total and sent >= total:
            break
        batch = simulator.due(rate, (now - last) if wait else 1.0)
        if total:
            batch = min(batch, total - sent)
        last = now
        if batch:
            sent += simulator.tick(batch)
        ticks += 1
        canary_runs = simulator.tallies["canary"].runs
        if canary_runs > canary_seen_runs:
            canary_seen_runs, canary_seen_tick = canary_runs, ticks
            version = simulator.tallies["canary"].version
            if version != serving:
                out(f"canary v{version} is being served")
                serving = version
        elif serving is not None and ticks - canary_seen_tick > quiet:
            out(f"canary v{serving} is no longer served (halted, rolled back or completed)")
            serving = None
        if now - last_report >= report_every:
            out(simulator.summary())
            last_report = now
        if wait:
            time.sleep(max(0.0, 1.0 - (clock() - now)))
    out(
        f"done: {sent} runs, {simulator.config_calls} config calls "
        f"({simulator.not_modified} not modified) | {simulator.summary()}"
    )
