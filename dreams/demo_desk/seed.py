"""Seed the demo's IT access desk: the agent with its sandbox environment, its recorded runs,
and a hand-written proposal replayed in the sandbox with a simulated user (idempotent).

`make demo` starts the sandbox (`python -m dreams.demo_desk.sandbox`) before seeding; when
nothing answers at the URL the seeder serves one itself for as long as it seeds. The sandbox
is on loopback, so its host must be in REVERIE_ENVIRONMENT_ALLOWED_HOSTS (`make demo` sets
127.0.0.1); without it the desk is seeded with no environment and says so.
"""

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model

from agents import services
from agents.ingest import ingest_runs
from agents.models import Agent, Run, Workspace, environment_url_problem
from dreams.demo_desk import runs as desk
from dreams.handwritten import propose_change
from dreams.models import Proposal

SLUG = "access-desk"
# Where `make demo` serves the sandbox (its SANDBOX_PORT); the demo seeder's default URL.
DEFAULT_SANDBOX_URL = os.environ.get("REVERIE_DEMO_SANDBOX_URL", "http://127.0.0.1:8765/mcp")
PROPOSAL_TITLE = "Check the access policy before granting a group"


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def sandbox_running(url: str) -> Iterator[None]:
    """Make sure the sandbox answers at `url` while seeding (serve one if nothing does)."""
    if not url or _answers(url):
        yield
        return
    from dreams.demo_desk.sandbox import SandboxServer

    parts = urlsplit(url)
    with SandboxServer(host=parts.hostname or "127.0.0.1", port=parts.port or 80):
        yield


def _agent(workspace: Workspace, url: str) -> Agent:
    agent = Agent.objects.filter(workspace=workspace, slug=SLUG).first()
    if agent is not None:
        return agent
    agent = services.create_agent(
        workspace=workspace,
        slug=SLUG,
        name="IT access desk",
        description="Grants Northwind staff access to groups; replays run in its MCP sandbox.",
        model="claude-sonnet-5-5",
        failure_threshold=0,
        write_tools=["grant_access"],
        environment_url=url,
        rollout_stages=[10, 100],
    )
    version = services.create_config_version(
        agent=agent,
        system_prompt=desk.SYSTEM_PROMPT,
        memory_documents=desk.MEMORY_DOCUMENTS,
        tools=desk.TOOLS,
        model=agent.model,
        source="import",
        note="Initial production config",
    )
    services.set_stable_version(agent=agent, version=version)
    agent.refresh_from_db()
    return agent


def seed_access_desk(
    *, workspace: Workspace, sandbox_url: str = DEFAULT_SANDBOX_URL, runs: int = 48
) -> str:
    """Create the desk, its runs and its replayed proposal; a line saying what was done."""
    problem = environment_url_problem(sandbox_url) if sandbox_url else ""
    url = "" if problem else sandbox_url
    agent = _agent(workspace, url)
    payloads = desk.generate_runs(runs)
    for payload in payloads:
        payload.update(agent=agent.slug, system=desk.SYSTEM_PROMPT, tools=desk.TOOLS)
        payload["model"] = agent.model
    created = sum(r.created for r in ingest_runs(workspace=workspace, items=payloads))
    note = f"IT access desk: {Run.objects.filter(agent=agent).count()} runs ({created} new)"
    if problem:
        note += f"; no sandbox environment ({problem})"
    if Proposal.objects.filter(agent=agent, title=PROPOSAL_TITLE).exists():
        return note + "; its proposal exists."
    author = get_user_model().objects.filter(username="demo").first()
    with sandbox_running(agent.environment_url):
        proposal = propose_change(
            agent=agent,
            actor=author,
            title=PROPOSAL_TITLE,
            rationale=(
                "Privileged groups were granted for good, or for as long as the employee asked; "
                "the directory's policy allows at most a few days. The desk should read the "
                "policy first."
            ),
            documents={
                "playbooks/access.md": desk.MEMORY_DOCUMENTS["playbooks/access.md"]
                + desk.CANDIDATE_RULE
            },
        )
    proposal.refresh_from_db()
    return note + f"; proposal {proposal.pk} ({proposal.status}) replayed in the sandbox."
