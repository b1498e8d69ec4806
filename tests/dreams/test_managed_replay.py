"""Replays of Managed Agents sessions read memory as the session did: mounted files, via tools."""

import json

import pytest

from agents import demo
from dreams.managed.sync import sync_link
from dreams.replay import replay
from tests.factories import ConfigVersionFactory, RunFactory
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.fake_managed import chat_turns, failed_outcome

pytestmark = pytest.mark.django_db

MOUNT = "/mnt/memory/support-memory"
CUSTOMER = "Hi, I'm Maya. Refund order NW-10001 (Ridge trekking poles), just process it please."
VERIFY = "Always look up the order with lookup_order before any refund."


def managed_run(agent, messages=None, mounts=None):
    """A run as the session sync stores it: metadata.managed with the session's memory mount."""
    mount = {"memory_store_id": "memstore_1", "mount_path": MOUNT, "name": "support-memory"}
    return RunFactory(
        agent=agent,
        messages=messages or [{"role": "user", "content": [text(CUSTOMER)]}],
        step_count=1,
        status="failure",
        tools=demo.TOOLS,
        metadata={"managed": {"session_id": "sesn_1", "memory_mounts": mounts or [mount]}},
    )


def version_with(agent, number, memory):
    return ConfigVersionFactory(
        agent=agent,
        number=number,
        system_prompt="You are the refunds desk of Northwind Outfitters.",
        memory_documents=memory,
        tools=demo.TOOLS,
    )


def test_a_managed_session_replays_with_memory_read_through_tools_not_pasted(
    agent, fake_gateway_settings
):
    fake_gateway_settings.responder = lambda body: FakeAnthropic.message(
        [tool_use("read", {"file_path": f"{MOUNT}/policies/refunds.md"}, id="toolu_r")]
        if len(body["messages"]) == 1
        else [text("Read it.")]
    )
    version = version_with(agent, 2, {"/policies/refunds.md": VERIFY})

    result = replay(managed_run(agent), version)

    sent = fake_gateway_settings.message_requests[0].body
    system = "".join(b["text"] for b in sent["system"])
    assert VERIFY not in system and "<memory path" not in system
    assert f"A memory store is mounted at {MOUNT}" in system
    assert {"read", "glob", "grep"} <= {t["name"] for t in sent["tools"]}
    # The read is answered from the replayed version's document, not the recording.
    assert result.messages[2]["content"][0]["content"] == VERIFY
    assert result.tool_calls == [
        {"name": "read", "input": {"file_path": f"{MOUNT}/policies/refunds.md"}, "source": "memory"}
    ]
    assert not result.off_recording and result.divergence_kind == ""


def test_a_recorded_memory_read_gets_the_candidates_text_and_is_not_a_divergence(
    agent, fake_gateway_settings
):
    path = f"{MOUNT}/policies/refunds.md"
    recorded = [
        {"role": "user", "content": [text("Can I return my poles?")]},
        {"role": "assistant", "content": [tool_use("read", {"file_path": path}, id="tu_1")]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "Old text."}],
        },
        {"role": "assistant", "content": [text("Yes, within 30 days.")]},
    ]
    fake_gateway_settings.responder = lambda body: FakeAnthropic.message(
        [tool_use("read", {"file_path": path}, id="toolu_r")]
        if len(body["messages"]) == 1
        else [text("Yes, within 30 days.")]
    )
    candidate = version_with(agent, 2, {"/policies/refunds.md": "New text."})

    result = replay(managed_run(agent, messages=recorded), candidate)

    assert result.messages[2]["content"][0]["content"] == "New text."
    assert result.divergence_kind == "" and result.divergence_step is None


def test_glob_grep_and_missing_files_answer_from_the_mounted_documents(
    agent, fake_gateway_settings
):
    calls = iter(
        [
            [tool_use("glob", {"pattern": "**/*.md", "path": MOUNT}, id="t1")],
            [tool_use("grep", {"pattern": "30 days", "path": MOUNT}, id="t2")],
            [tool_use("read", {"file_path": f"{MOUNT}/nope.md"}, id="t3")],
            [text("Done.")],
        ]
    )
    fake_gateway_settings.responder = lambda body: FakeAnthropic.message(next(calls))
    version = version_with(
        agent, 2, {"/policies/refunds.md": "Refunds within 30 days.", "/notes.md": "Hi."}
    )

    result = replay(managed_run(agent), version)

    answers = [m["content"][0] for m in result.messages if m["role"] == "user"][1:]
    assert answers[0]["content"].splitlines() == [
        f"{MOUNT}/notes.md",
        f"{MOUNT}/policies/refunds.md",
    ]
    assert answers[1]["content"] == f"{MOUNT}/policies/refunds.md:1:Refunds within 30 days."
    assert answers[2]["is_error"] is True and "not found" in answers[2]["content"]


def test_a_run_outside_managed_agents_still_gets_memory_in_the_system_prompt(
    agent, fake_gateway_settings
):
    fake_gateway_settings.responder = lambda body: FakeAnthropic.message([text("Hello.")])
    run = RunFactory(agent=agent, messages=[{"role": "user", "content": [text("Hi")]}])

    replay(run, version_with(agent, 2, {"/policies/refunds.md": VERIFY}))

    sent = fake_gateway_settings.message_requests[0].body
    assert VERIFY in "".join(b["text"] for b in sent["system"])
    assert "read" not in {t["name"] for t in sent.get("tools") or []}


def test_the_simulated_agent_reads_its_mounted_memory_before_acting(agent, settings):
    """End to end on the simulated model: the candidate's memory changes behaviour only by being read."""
    settings.REVERIE_MODEL_BACKEND = "simulated"
    run = managed_run(agent)
    base = version_with(agent, 2, {"/policies/refunds.md": "Be kind."})
    candidate = version_with(agent, 3, {"/policies/refunds.md": f"Be kind. {VERIFY}"})

    before = replay(run, base)
    after = replay(run, candidate)

    assert [c["name"] for c in before.tool_calls] == ["glob", "read", "issue_refund"]
    assert [c["name"] for c in after.tool_calls][:3] == ["glob", "read", "lookup_order"]
    assert before.tool_calls[1]["source"] == "memory"
    # Reading memory does not use up the recording's step budget (1 step + margin 2).
    assert before.stop_reason == "end_turn" and before.steps == 4


def test_synced_sessions_keep_their_memory_mount_for_replay(managed_link, fake_managed):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome(),
        memory_store=managed_link.memory_store_id,
    )

    sync_link(link_id=managed_link.pk)

    run = managed_link.agent.runs.get(external_id=session)
    mounts = run.metadata["managed"]["memory_mounts"]
    assert mounts == [
        {
            "memory_store_id": managed_link.memory_store_id,
            "mount_path": "/mnt/memory/support-memory",
            "name": "support-memory",
            "description": "",
            "access": "read_write",
        }
    ]
    assert json.dumps(mounts)  # plain JSON on both databases
