"""The documented production recipe: the Procfile's web command under idle connections."""

import http.client
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import ports

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "config" / "deploy" / "Procfile"


def procfile_command(process: str) -> list[str]:
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        if name == process:
            return shlex.split(command)
    raise AssertionError(f"no {process} line in {PROCFILE}")


def free_port() -> int:
    # The session's port range (18500-18599); pick one nobody listens on.
    first = ports.port(18560)
    for port in range(first, first + 40):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {first}-{first + 39}")


def get(port: int, path: str, timeout: float = 10) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    finally:
        conn.close()
    return status, time.monotonic() - started


@pytest.fixture
def web_server(tmp_path: Path):
    port = free_port()
    command = procfile_command("web")
    assert command[0] == "gunicorn"
    env = {
        **os.environ,
        "REVERIE_VAR_DIR": str(tmp_path),
        "REVERIE_WEB_BIND": f"127.0.0.1:{port}",
        "REVERIE_LOG_LEVEL": "WARNING",
    }
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", *command[1:]], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            get(port, "/login/", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_idle_connections_do_not_stall_requests(web_server: int):
    idle = [socket.create_connection(("127.0.0.1", web_server)) for _ in range(2)]
    try:
        time.sleep(0.5)  # both are accepted by now and sending nothing

        status, seconds = get(web_server, "/login/")

        assert status == 200
        # gunicorn's sync workers (2) would wait for the idle clients' timeout (seconds);
        # threaded workers answer at once.
        assert seconds < 1.5, f"request took {seconds:.2f} s behind two idle connections"
    finally:
        for sock in idle:
            sock.close()


def example_env() -> dict[str, str]:
    lines = (ROOT / "config" / "deploy" / "reverie.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_example_env_passes_check_deploy_and_lets_the_local_probe_in(settings):
    """README's clean-machine steps: `check --deploy` clean with the example's settings (a real
    secret filled in), and the local `curl http://127.0.0.1:8000/healthz` is an allowed host
    (the example used to allow only the public name: the probe got 400 DisallowedHost)."""
    env = {**example_env(), "DJANGO_SECRET_KEY": "x" * 30 + "-deploy-check-" + "y" * 30}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REVERIE_VAR_DIR": str(ROOT / "var"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout

    from django.test import Client

    settings.ALLOWED_HOSTS = env["DJANGO_ALLOWED_HOSTS"].split(",")
    settings.REDIS_URL = ""
    assert Client(HTTP_HOST="127.0.0.1:8000").get("/healthz").status_code != 400
    assert env["REVERIE_TRUSTED_PROXIES"] == "127.0.0.1"  # the proxy on the same machine


def test_the_documented_workers_consume_the_canary_queue():
    """Rollout checks are routed to `canary`: a worker started as documented must consume it,
    or no rollout advances or halts (README's clean-machine steps once started `-Q celery`)."""
    steps = (ROOT / "README.md").read_text().split("## Deployment")[1].split("\n## ")[0]
    block = steps.split("```bash")[1].split("```")[0]  # "From a clean machine"
    workers = [line for line in block.splitlines() if "celery -A config worker" in line]
    assert workers
    for line in workers:
        queues = shlex.split(line)[shlex.split(line).index("-Q") + 1].split(",")
        assert "canary" in queues, line
    for unit in ("Procfile", "reverie-worker.service"):
        text = (ROOT / "config" / "deploy" / unit).read_text()
        assert "-Q canary" in text or "-Q celery,canary" in text, unit


def test_the_worker_liveness_check_pings_the_workers_node_and_restarts_it():
    """A worker wedged after a broker outage stays alive consuming nothing: the shipped timer
    pings its node (the worker unit sets no `-n`, so `celery@<hostname>`) and restarts it."""
    unit = (ROOT / "config" / "deploy" / "reverie-worker-ping.service").read_text()
    worker = (ROOT / "config" / "deploy" / "reverie-worker.service").read_text()
    assert " -n " not in worker  # default node name: celery@<hostname>
    assert 'inspect ping \\\n  --destination "celery@$(hostname)"' in unit
    assert "systemctl restart reverie-worker.service" in unit
    assert "EnvironmentFile=/etc/reverie/reverie.env" in unit  # the broker URL
    timer = (ROOT / "config" / "deploy" / "reverie-worker-ping.timer").read_text()
    assert "OnUnitActiveSec=" in timer and "WantedBy=timers.target" in timer


def test_the_ping_fails_when_no_worker_answers():
    """The check's command exits non-zero when nothing consumes (what triggers the restart):
    a real ping over Redis to a node that does not exist."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("needs a broker: REDIS_URL (CI's PostgreSQL + Redis run sets it)")
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "inspect", "ping"]
        + ["--destination", "celery@no-such-worker", "--timeout", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout + done.stderr
