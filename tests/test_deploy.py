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
