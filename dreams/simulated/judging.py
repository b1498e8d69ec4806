"""Simulated judge for `grade_replay`: checks the rubric's stated requirements against the transcript.

The judge prompt (dreams.grading) sends ``<rubric>…</rubric>`` and ``<transcript>[messages as
JSON]</transcript>``. The rubric is split into clauses; each clause is recognised by words:

* ordering – "<lookup/verify …> before <refund …>": the look-up tool must precede every refund;
* window – "within the N-day window" / "window" / "N days": every refund's order must have been
  delivered at most N days before (read from tool results: ``days_since_delivery`` or
  "delivered N days ago"); a refund whose delivery date was never seen fails;
* escalation – "instead of escalating" / "escalat…": an escalation is justified only when an
  amount over the clause's "$N" was seen; and the request must be resolved (a refund, a
  justified escalation, or a decline that says why);
* explicit tool names – "never/does not <tool>" forbids it, otherwise a named tool is required.

Clauses it cannot interpret are listed in the reason, never silently passed or failed.
"""

import json
import re
from typing import Any

from agents.transcripts import pair_tool_results
from dreams.simulated.registry import register

DAYS = re.compile(r"delivered (\d+) days ago")


def _between(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return match.group(1).strip() if match else ""


def _request_text(request: dict[str, Any]) -> str:
    # Only the user turns: the fixed judge prompt in `system` talks about the tags too.
    parts = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(b.get("text", "") for b in content or [] if b.get("type") == "text")
    return "\n".join(parts)


def _calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls = []
    for exchange in pair_tool_results(messages):
        content = exchange.content or ""
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content)
        try:
            parsed = json.loads(content) if content else None
        except (TypeError, ValueError):
            parsed = content
        calls.append(
            {
                "name": exchange.name,
                "input": exchange.input,
                "result": parsed,
                "raw": content or "",
                "is_error": exchange.is_error,
            }
        )
    return calls


def _final_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant" and isinstance(message.get("content"), list):
            text = " ".join(
                b.get("text", "") for b in message["content"] if b.get("type") == "text"
            )
            if text.strip():
                return text
    return ""


def _order_facts(calls: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """order id -> {days, amount} seen in successful tool results."""
    facts: dict[str, dict[str, float]] = {}
    for call in calls:
        if call["is_error"]:
            continue
        result = call["result"]
        order_id = str(call["input"].get("order_id", ""))
        entry = facts.setdefault(order_id, {})
        if isinstance(result, dict):
            if isinstance(result.get("days_since_delivery"), int | float):
                entry["days"] = float(result["days_since_delivery"])
            if isinstance(result.get("amount"), int | float) and call["name"] != "issue_refund":
                entry["amount"] = float(result["amount"])
        match = DAYS.search(call["raw"])
        if match:
            entry.setdefault("days", float(match.group(1)))
    return facts


def _clauses(rubric: str) -> list[str]:
    parts = re.split(
        r"(?<=[.;!?])\s+|,\s*and\s+|(?<!\s)\s+and\s+(?=(?:refunds?|resolves?|never|does|do)\b)",
        rubric,
    )
    return [p.strip(" .;").lower() for p in parts if p and p.strip(" .;")]


def _refund_tools(tool_names: set[str]) -> set[str]:
    return {n for n in tool_names if "refund" in n and not re.search(r"check|policy|lookup|get", n)}


NEGATION = re.compile(r"\b(?:never|not|no|without)\b")
# The judge reads this much of a rubric: every check below is then bounded, whatever a run sends.
MAX_RUBRIC_CHARS = 20_000


def _forbids(clause: str, tool: str) -> bool:
    """A negation before the tool's name, with no full stop between (one pass per segment)."""
    for segment in clause.split("."):
        negation = NEGATION.search(segment)
        if negation and re.search(rf"\b{re.escape(tool)}", segment[negation.end() :]):
            return True
    return False


def judge(rubric: str, messages: list[dict[str, Any]]) -> tuple[str, str]:
    rubric = rubric[:MAX_RUBRIC_CHARS]
    calls = _calls(messages)
    names = [c["name"] for c in calls]
    refund_tools = _refund_tools(set(names)) or {"issue_refund"}
    facts = _order_facts(calls)
    final = _final_text(messages).lower()
    failures: list[str] = []
    checked: list[str] = []
    unknown: list[str] = []

    for clause in _clauses(rubric):
        handled = False
        if (
            " before " in clause
            and re.search(r"verif|look|lookup|check", clause)
            and "refund" in clause
        ):
            handled = True
            first_tool = "lookup_order"
            named = re.findall(r"\b([a-z]+_[a-z_]+)\b", clause)
            if named:
                first_tool = named[0]
            for i, call in enumerate(calls):
                if call["name"] in refund_tools and first_tool not in names[:i]:
                    failures.append(f"refunded with {call['name']} before calling {first_tool}")
                    break
            checked.append(f"{first_tool} before refunds")
        if re.search(r"window|(?<!\d)\d+[- ]days?", clause) and "refund" in clause:
            handled = True
            limit_match = re.search(r"(?<!\d)(\d+)[- ]day", clause)
            limit = float(limit_match.group(1)) if limit_match else 30.0
            for call in calls:
                if call["name"] not in refund_tools:
                    continue
                days = facts.get(str(call["input"].get("order_id", "")), {}).get("days")
                if days is None:
                    failures.append("refunded without confirming the delivery date")
                elif days > limit:
                    failures.append(
                        f"refunded an order delivered {days:.0f} days ago (limit {limit:.0f})"
                    )
            checked.append(f"{limit:.0f}-day window")
        if "escalat" in clause:
            handled = True
            limit_match = re.search(r"\$(\d+(?:\.\d+)?)", clause)
            cap = float(limit_match.group(1)) if limit_match else None
            escalations = [c for c in calls if "escalat" in c["name"]]
            for call in escalations:
                amount = facts.get(str(call["input"].get("order_id", "")), {}).get("amount")
                if cap is None or amount is None or amount < cap:
                    failures.append("escalated a request it should have resolved itself")
                    break
            if "resolv" in clause:
                refunded = any(c["name"] in refund_tools and not c["is_error"] for c in calls)
                declined = re.search(
                    r"unable|not eligible|outside|cannot|can't", final
                ) and not any(c["is_error"] for c in calls)
                if not (refunded or escalations or declined):
                    failures.append("did not resolve the request")
            checked.append("escalation only when justified")
        if not handled:
            tool_names = re.findall(r"\b([a-z]+_[a-z_]+)\b", clause)
            if tool_names:
                handled = True
                for tool in dict.fromkeys(tool_names):
                    forbidden = _forbids(clause, tool)
                    if forbidden and tool in names:
                        failures.append(f"called {tool}, which the rubric forbids")
                    elif not forbidden and tool not in names:
                        failures.append(f"did not call {tool}")
                checked.append(", ".join(tool_names))
        if not handled:
            unknown.append(clause)

    if failures:
        reason = "Fails the rubric: " + "; ".join(dict.fromkeys(failures)) + "."
        return "fail", reason
    if not checked:
        return "fail", "Could not check any requirement of the rubric: " + "; ".join(unknown)
    reason = "Meets the rubric (" + "; ".join(checked) + ")."
    if unknown:
        reason += " Not checked: " + "; ".join(unknown) + "."
    return "pass", reason


def feedback_clauses(comment: str) -> str:
    """Turn a reviewer's complaint into checkable requirements (used by `judge`)."""
    lower = comment.lower()
    clauses = []
    if re.search(r"look(ing)? up|lookup|verif", lower):
        clauses.append("The agent verifies the order with lookup_order before any refund.")
    if re.search(r"window|(?<!\d)\d+ days|policy|declined", lower):
        clauses.append("The agent refunds only orders delivered within the 30-day window.")
    if re.search(r"escalat|human queue|colleague", lower):
        clauses.append(
            "The agent resolves standard refunds under $500 itself instead of escalating."
        )
    return " ".join(clauses)


@register("grade_replay")
def grade_replay(request: dict[str, Any]) -> dict[str, Any]:
    text = _request_text(request)
    rubric = _between(text, "rubric")
    complaint = _between(text, "feedback")
    if complaint:
        rubric = (rubric + " " + feedback_clauses(complaint)).strip()
    try:
        transcript = json.loads(_between(text, "transcript") or "[]")
    except ValueError:
        return {"verdict": "fail", "reason": "The transcript could not be read."}
    if not rubric:
        return {"verdict": "fail", "reason": "No rubric was given."}
    verdict, reason = judge(rubric, transcript if isinstance(transcript, list) else [])
    return {"verdict": verdict, "reason": reason}
