"""Claude Code session transcripts: the `claude_code` run format, the importer, the Stop hook."""

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Run

SESSION = "5f0c1d2e-session"


def entry(kind, uuid, parent, content, **extra):
    message = {"role": "assistant" if kind == "assistant" else "user", "content": content}
    message.update(extra.pop("message", {}))
    return {
        "type": kind,
        "uuid": uuid,
        "parentUuid": parent,
        "sessionId": SESSION,
        "timestamp": extra.pop("timestamp", "2026-11-30T10:00:00.000Z"),
        "message": message,
        **extra,
    }


def transcript() -> str:
    """A session as Claude Code writes it: one entry per content block, a parallel tool turn whose
    results fork the chain, a meta entry, a progress entry, a sidechain and a corrupt last line."""
    usage = {"input_tokens": 900, "output_tokens": 60, "cache_read_input_tokens": 4000}
    first = {"id": "msg_1", "model": "claude-sonnet-5-5", "usage": usage}
    lines = [
        {"type": "summary", "summary": "Fix the failing test", "leafUuid": "a9"},
        entry("user", "u1", None, "The date test fails, fix it please"),
        entry("user", "m1", "u1", "<command-caveat>ignore</command-caveat>", isMeta=True),
        entry(
            "assistant",
            "a1",
            "u1",
            [{"type": "thinking", "thinking": "Look first.", "signature": "sig"}],
            message=first,
        ),
        entry(
            "assistant",
            "a2",
            "a1",
            [{"type": "text", "text": "Reading both files."}],
            message=first,
        ),
        entry(
            "assistant",
            "a3",
            "a2",
            [
                {
                    "type": "tool_use",
                    "id": "toolu_A",
                    "name": "Read",
                    "input": {"file_path": "dates.py"},
                }
            ],
            message=first,
        ),
        entry(
            "assistant",
            "a4",
            "a3",
            [
                {
                    "type": "tool_use",
                    "id": "toolu_B",
                    "name": "Read",
                    "input": {"file_path": "test_dates.py"},
                }
            ],
            message=first,
        ),
        entry(
            "user",
            "r1",
            "a3",
            [{"type": "tool_result", "tool_use_id": "toolu_A", "content": "def parse(): ..." * 50}],
        ),
        entry(
            "user", "r2", "a4", [{"type": "tool_result", "tool_use_id": "toolu_B", "content": ""}]
        ),
        {"type": "progress", "uuid": "p1", "parentUuid": "r2", "data": {"kind": "hook"}},
        entry("assistant", "s1", "u1", [{"type": "text", "text": "sidechain"}], isSidechain=True),
        entry(
            "assistant",
            "a9",
            "p1",
            [{"type": "text", "text": "Fixed: parse now accepts a trailing Z."}],
            message={
                "id": "msg_2",
                "model": "claude-sonnet-5-5",
                "usage": {"input_tokens": 50, "output_tokens": 20},
            },
            timestamp="2026-11-30T10:02:30.000Z",
        ),
    ]
    return "\n".join(json.dumps(line) for line in lines) + '\n{"type": "assistant", "uuid": "trunc'


@pytest.mark.django_db
def test_a_session_transcript_is_a_run_format(api, agent):
    response = api.post(
        "/api/v1/runs",
        {
            "agent": "support",
            "external_id": f"claude-code:{SESSION}",
            "format": "claude_code",
            "transcript": transcript(),
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    run = Run.objects.get(agent=agent)
    assert [m["role"] for m in run.messages] == ["user", "assistant", "user", "assistant"]
    assert [b["type"] for b in run.messages[1]["content"]] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    # both results of the parallel turn, though the chain forked between them
    assert [b["tool_use_id"] for b in run.messages[2]["content"]] == ["toolu_A", "toolu_B"]
    assert "command-caveat" not in json.dumps(run.messages) and "sidechain" not in json.dumps(
        run.messages
    )
    # usage once per API message, not once per entry
    assert (run.input_tokens, run.output_tokens, run.cache_read_tokens) == (950, 80, 4000)
    assert run.model == "claude-sonnet-5-5" and run.source_format == "claude_code"


@pytest.mark.django_db
def test_a_transcript_without_messages_names_the_field(api, agent):
    response = api.post(
        "/api/v1/runs",
        {
            "agent": "support",
            "external_id": "x",
            "format": "claude_code",
            "transcript": '{"type": "summary"}',
        },
        format="json",
    )

    assert response.status_code == 400
    assert "transcript" in response.json()["error"]["fields"]


@pytest.mark.django_db
def test_the_importer_stores_each_file_once(tmp_path, agent, workspace):
    path = tmp_path / f"{SESSION}.jsonl"
    path.write_text(transcript())
    out = StringIO()

    call_command(
        "import_claude_code", str(path), workspace="northwind", agent="support", stdout=out
    )
    call_command(
        "import_claude_code", str(path), workspace="northwind", agent="support", stdout=out
    )

    assert "1 run(s) created" in out.getvalue() and "1 already stored" in out.getvalue()
    run = Run.objects.get(agent=agent)
    assert run.external_id == f"claude-code:{SESSION}" and run.latency_ms == 150_000
    with pytest.raises(CommandError, match="unknown agent"):
        call_command("import_claude_code", str(path), workspace="northwind", agent="nobody")


@pytest.mark.django_db(transaction=True)
def test_the_stop_hook_sends_the_session_and_never_fails(live_server, api_key, agent, tmp_path):
    path = tmp_path / f"{SESSION}.jsonl"
    path.write_text(transcript())
    event = {
        "session_id": SESSION,
        "transcript_path": str(path),
        "hook_event_name": "Stop",
        "cwd": "/repo",
        "stop_hook_active": False,
    }
    env = {
        **os.environ,
        "REVERIE_URL": live_server.url,
        "REVERIE_API_KEY": api_key,
        "REVERIE_AGENT": "support",
    }

    def hook(env, event):
        return subprocess.run(
            [sys.executable, "-m", "reverie_client.claude_code_hook"],
            input=json.dumps(event),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, again = hook(env, event), hook(env, event)
    down = hook({**env, "REVERIE_URL": "http://127.0.0.1:9"}, event)

    assert (first.returncode, again.returncode, down.returncode) == (0, 0, 0)
    assert "could not send" in down.stderr
    run = Run.objects.get(agent=agent)  # the re-fired hook stored nothing new
    assert run.external_id == f"claude-code:{SESSION}:a9"
    assert "Stop" in run.tags and run.metadata["claude_code"]["cwd"] == "/repo"
