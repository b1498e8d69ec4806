"""`manage.py simulate_traffic`: sticky config calls and runs reported per arm over the API."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from agents import traffic
from agents.models import Run
from agents.routing_api import clear_caches
from tests.factories import ConfigVersionFactory


@pytest.fixture(autouse=True)
def in_process_requests_keep_the_test_transaction():
    """The in-process client calls the WSGI app, whose request signals would close the test's
    connection mid-transaction; Django's test client disconnects them the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    clear_caches()  # the config endpoint's in-process caches (ids repeat between tests)
    yield
    clear_caches()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def simulate(*args: str) -> str:
    out = StringIO()
    call_command("simulate_traffic", *args, "--no-wait", "--seed", "3", stdout=out)
    return out.getvalue()


def test_runs_are_reported_on_the_version_each_sticky_key_was_given(agent):
    canary = ConfigVersionFactory(agent=agent, number=2)
    agent.canary_version, agent.canary_percent = canary, 50
    agent.save(update_fields=["canary_version", "canary_percent"])

    output = simulate("--agent", "support", "--runs", "400", "--rate", "100", "--margin", "-0.5")

    runs = list(Run.objects.filter(agent=agent))
    assert len(runs) == 400
    assert all("simulated" in r.tags for r in runs)
    by_key: dict[str, set[int]] = {}
    for run in runs:
        by_key.setdefault(run.metadata["routing_key"], set()).add(run.config_version_id)
    assert all(len(versions) == 1 for versions in by_key.values())  # sticky
    stable = [r for r in runs if r.config_version_id == agent.stable_version_id]
    on_canary = [r for r in runs if r.config_version_id == canary.pk]
    assert 120 < len(on_canary) < 280
    ok = lambda rs: sum(r.status == "success" for r in rs) / len(rs)  # noqa: E731
    assert ok(stable) - ok(on_canary) > 0.35  # the chosen margin, -0.5
    assert "done: 400 runs, 400 config calls" in output
    assert "canary v2 is being served" in output


def test_without_a_canary_every_run_is_on_stable_and_revalidates(agent):
    output = simulate("--agent", "support", "--runs", "120", "--rate", "60", "--keys", "10")

    versions = set(Run.objects.filter(agent=agent).values_list("config_version_id", flat=True))
    assert versions == {agent.stable_version_id}
    not_modified = int(output.split("(")[1].split()[0])
    assert not_modified >= 100  # 10 keys: after the first call each is a 304


def test_outcome_rates_follow_the_margin():
    outcomes = traffic.Outcomes(success=0.8, margin=-0.3)

    assert outcomes.success_rate("stable") == 0.8
    assert outcomes.success_rate("canary") == pytest.approx(0.5)
    assert traffic.Outcomes(success=0.9, margin=0.5).success_rate("canary") == 1.0


def test_a_url_needs_a_key(agent):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--url needs --key"):
        simulate("--agent", "support", "--url", "http://127.0.0.1:19001", "--runs", "1")
