"""Send a Claude Code / Claude Agent SDK session to Reverie when the agent stops.

Claude Code (`.claude/settings.json`), for the `Stop` and `SubagentStop` events:

    {"hooks": {"Stop": [{"hooks": [{"type": "command",
        "command": "python -m reverie_client.claude_code_hook"}]}],
      "SubagentStop": [{"hooks": [{"type": "command",
        "command": "python -m reverie_client.claude_code_hook"}]}]}}

with REVERIE_URL, REVERIE_API_KEY and REVERIE_AGENT in the environment. The hook reads the
event from stdin, posts the transcript file (format `claude_code`) and always exits 0: a
Reverie outage never blocks the agent. Each stop is one run keyed by the session and the last
transcript entry (`claude-code:<session>:<uuid>`), so a re-fired hook stores nothing twice; a
subagent's own transcript is `claude-code:<session>:agent:<agent id>`.

Claude Agent SDK: `ClaudeAgentOptions(hooks={"Stop": [HookMatcher(hooks=[agent_sdk_hook(agent=…)])]})`.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2


def run_item(event: dict[str, Any], *, agent: str) -> dict[str, Any] | None:
    """The run to send for a Stop / SubagentStop hook event, or None when there is no transcript."""
    session = str(event.get("session_id") or "unknown")
    subagent = event.get("hook_event_name") == "SubagentStop" and event.get("agent_transcript_path")
    path = event.get("agent_transcript_path") if subagent else event.get("transcript_path")
    if not path:
        return None
    text = Path(os.path.expanduser(str(path))).read_text(encoding="utf-8")
    if subagent:
        external_id = f"claude-code:{session}:agent:{event.get('agent_id') or 'unknown'}"
    else:
        external_id = f"claude-code:{session}:{_last_uuid(text) or 'start'}"
    return {
        "agent": agent,
        "external_id": external_id[:255],
        "format": "claude_code",
        "transcript": text,
        "tags": ["claude-code", str(event.get("hook_event_name") or "Stop")],
        "metadata": {"claude_code": {"session_id": session, "cwd": event.get("cwd", "")}},
    }


def _last_uuid(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("uuid"), str):
            return entry["uuid"]
    return None


def agent_sdk_hook(*, agent: str, reverie: Any = None) -> Any:
    """A Claude Agent SDK hook callback that queues the session on the Reverie client."""
    from reverie_client._client import default_reverie

    async def hook(
        input_data: dict[str, Any], tool_use_id: str | None, context: Any
    ) -> dict[str, Any]:
        try:
            item = run_item(input_data, agent=agent)
            if item is not None:
                (reverie or default_reverie()).capture(item)
        except Exception as exc:  # never break the agent
            print(f"reverie: could not capture the session: {exc}", file=sys.stderr)
        return {}

    return hook


def main() -> int:
    url, key, agent = (
        os.environ.get(n, "") for n in ("REVERIE_URL", "REVERIE_API_KEY", "REVERIE_AGENT")
    )
    try:
        event = json.load(sys.stdin)
        if not (url and key and agent):
            raise ValueError("set REVERIE_URL, REVERIE_API_KEY and REVERIE_AGENT")
        item = run_item(event, agent=agent)
        if item is None:
            return 0
        response = httpx2.post(
            f"{url.rstrip('/')}/api/v1/runs",
            json=item,
            headers={"Authorization": f"Bearer {key}"},
            timeout=float(os.environ.get("REVERIE_TIMEOUT", "10")),
        )
        if response.status_code >= 300:
            print(f"reverie: {response.status_code} {response.text[:500]}", file=sys.stderr)
    except Exception as exc:  # a hook must never fail the session
        print(f"reverie: could not send the session: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
