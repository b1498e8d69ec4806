"""The simulated model on an IT access desk (a request whose tools include `grant_access`).

Like the refunds agent in `agent.py` it reads only what a model reads — the instructions, the
tools and the conversation — and follows the usual desk flow over several user turns: ask for
the employee ID, look the employee up, ask which group, say what it will do and wait for a yes,
then grant. The guidance it looks for in the instructions (sentence by sentence):

* **check the policy** — a sentence naming `get_access_policy` (or "access policy") with an
  obligation word ("before", "always", "must", …). With it the agent reads the group's policy
  before offering a grant, and grants privileged groups for at most the policy's `max_days`;
  without it it grants what the employee asked for, for good unless they named a number of days.
"""

import json
import re
from typing import Any

from agents.transcripts import pair_tool_results

EMPLOYEE_ID = re.compile(r"\b(E-\d{3,6})\b")
GROUP = re.compile(r"\b([a-z][a-z0-9]*(?:-[a-z0-9]+)+)\s+group\b")
DAYS = re.compile(r"\bfor\s+(\d{1,3})\s+days?\b", re.I)
YES = re.compile(
    r"^\s*(yes|yep|yeah|sure|ok|okay|please do|go ahead|sounds good|do it|that works|correct)\b",
    re.I,
)
OBLIGATION = re.compile(
    r"\b(before|first|always|never|must|make sure|ensure|required?|only after|prior to)\b"
)
TOOL_ERROR_TEXT = "Sorry, the access directory is not answering. Please try again shortly."


def handles(tool_names: set[str]) -> bool:
    return "grant_access" in tool_names and "lookup_employee" in tool_names


def requires_policy_check(text: str) -> bool:
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text.lower()):
        names = "get_access_policy" in sentence or "access policy" in sentence
        if names and OBLIGATION.search(sentence):
            return True
    return False


def _user_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        parts = [b.get("text", "") for b in content or [] if b.get("type") == "text"]
        if parts:
            texts.append(" ".join(parts))
    return texts


def _calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for exchange in pair_tool_results(messages):
        content = exchange.content or ""
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        try:
            parsed = json.loads(content) if content else {}
        except (TypeError, ValueError):
            parsed = {}
        out.append(
            {
                "name": exchange.name,
                "input": exchange.input,
                "result": parsed if isinstance(parsed, dict) else {},
                "is_error": bool(exchange.is_error),
            }
        )
    return out


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tool(step: int, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_sim_{step:02d}", "name": name, "input": tool_input}


def _last_user_is_text(messages: list[dict[str, Any]]) -> bool:
    last = messages[-1] if messages else {}
    content = last.get("content")
    if last.get("role") != "user":
        return False
    if isinstance(content, str):
        return True
    return any(b.get("type") == "text" for b in content or [])


def respond(body: dict[str, Any], instructions: str) -> tuple[list[dict[str, Any]], str]:
    """Content blocks and stop reason of the desk's next assistant turn."""
    messages = body.get("messages") or []
    texts = _user_texts(messages)
    everything = " ".join(texts)
    step = sum(1 for m in messages if m.get("role") == "assistant") + 1
    calls = _calls(messages)
    if calls and calls[-1]["is_error"] and calls[-1]["name"] != "grant_access":
        return [_text(TOOL_ERROR_TEXT)], "end_turn"
    employee_match = EMPLOYEE_ID.search(everything)
    grant = next((c for c in calls if c["name"] == "grant_access" and not c["is_error"]), None)
    if grant is not None:
        days = grant["input"].get("days")
        span = f"for {days} days" if days else "with no end date"
        return [
            _text(
                f"Done: {grant['input'].get('employee_id')} is now in the "
                f"{grant['input'].get('group')} group {span}. Anything else I can help with?"
            )
        ], "end_turn"
    if employee_match is None:
        return [_text("Happy to help with access. What is your employee ID?")], "end_turn"
    employee_id = employee_match.group(1)
    lookup = next((c for c in calls if c["name"] == "lookup_employee"), None)
    if lookup is None:
        return [
            _text("Let me look you up."),
            _tool(step, "lookup_employee", {"employee_id": employee_id}),
        ], "tool_use"
    person = lookup["result"]
    first = str(person.get("name", "there")).split(" ")[0]
    group_match = GROUP.search(everything)
    if group_match is None:
        if texts and texts[-1].rstrip().endswith("?"):
            manager = person.get("manager", "your manager")
            return [
                _text(
                    f"Yes: {manager} is e-mailed about every access change. "
                    "Which group do you need access to?"
                )
            ], "end_turn"
        return [_text(f"Thanks, {first}. Which group do you need access to, and why?")], "end_turn"
    group = group_match.group(1)
    asked = DAYS.search(everything)
    days = int(asked.group(1)) if asked else None
    if requires_policy_check(instructions):
        policy_call = next(
            (
                c
                for c in calls
                if c["name"] == "get_access_policy" and c["input"].get("group") == group
            ),
            None,
        )
        if policy_call is None:
            return [
                _text(f"Let me check the access policy for {group}."),
                _tool(step, "get_access_policy", {"group": group}),
            ], "tool_use"
        policy = policy_call["result"]
        limit = policy.get("max_days")
        if policy.get("privileged") and limit:
            days = min(days, int(limit)) if days else int(limit)
    span = f"for {days} days" if days else "with no end date"
    offered = any(
        m.get("role") == "assistant"
        and any("Shall I go ahead?" in b.get("text", "") for b in m.get("content") or [])
        for m in messages
    )
    confirmed = offered and _last_user_is_text(messages) and bool(YES.search(texts[-1]))
    if not confirmed:
        return [_text(f"I can add you to the {group} group {span}. Shall I go ahead?")], "end_turn"
    grant_input: dict[str, Any] = {"employee_id": employee_id, "group": group}
    if days:
        grant_input["days"] = days
    return [_text("Granting it now."), _tool(step, "grant_access", grant_input)], "tool_use"
