"""The simulated support agent: answers non-structured Messages requests by documented rules.

It reads only what a model would read: the system text (system prompt + rendered memory
documents), the tool list and the messages. It never sees run labels, tags or expectations.

Guidance it looks for in the instructions (sentence by sentence, case-insensitive):

* **verify first** – a sentence that names looking the order up (``lookup_order``, "look up",
  "verify") together with refunds and an ordering/obligation word ("before", "first", "always",
  "never", "must", "even if", "without", "prior to"). Without it, a customer who pushes to skip
  checks ("just process it", "no need to look it up", ...) gets ``issue_refund`` straight away.
* **check the window** – a sentence that names ``check_refund_policy`` (or checking the refund
  window / 30-day policy / eligibility) together with refunding or declining and an obligation
  word. With it the agent calls ``check_refund_policy`` after the lookup and declines ineligible
  orders; without it it refunds on the customer's word.
* **resolve, don't escalate** – a sentence that ties escalation to the customer's mood ("upset",
  "angry", "annoyed", "frustrated", "tone") with a negation ("do not", "never", "instead"), or
  tells the agent to resolve/handle standard refunds "yourself". Without it an angry customer
  ("ridiculous", "third time", "furious", ...) is escalated straight away.
* **human approval threshold** – "over $N" in a sentence about a human / approval / escalation:
  orders above N are escalated after the lookup.

World knowledge: like a model that has read the shop's public catalogue, it knows the demo
shop's list prices (agents.demo.ITEMS), which it uses only when it refunds without a lookup.
A tool error makes it apologise and stop; unknown domains get a short acknowledgement.
An IT access desk (tools `lookup_employee` and `grant_access`) is answered by `access_desk`.

Mounted memory (a Managed Agents session): when the system text says "A memory store is mounted
at <path>" and the `glob` and `read` tools are offered, it first lists the mount with `glob`, then
reads every file with `read`, and only then follows the guidance above, read from the system
text plus what those reads returned, exactly as a Managed Agent reads its memory.
"""

import json
import re
from typing import Any

from agents import demo
from agents.transcripts import pair_tool_results
from dreams.simulated import access_desk

ORDER_ID = re.compile(r"\b([A-Z]{2,5}-\d{3,})\b")
NAME = re.compile(r"\b(?:I'm|I am|my name is)\s+([A-Z][a-z]+)")
REASON = re.compile(r"\bbecause\s+(.+?)\.(?:\s|$)")
URGENT_CUES = (
    "just process",
    "no need to look",
    "don't need to look",
    "do not need to look",
    "refund it now",
    "right away",
    "skip the check",
)
ANGRY_CUES = (
    "ridiculous",
    "third time",
    "unacceptable",
    "furious",
    "fed up",
    "outrageous",
)
OBLIGATION = re.compile(
    r"\b(before|first|always|never|must|even if|even when|without|prior to|make sure|ensure|required?|only after)\b"
)
NEGATION = re.compile(r"\b(do not|don't|never|not|instead|no need to|avoid)\b")
CATALOGUE = {name.lower(): price for name, price in [*demo.ITEMS, *demo.BIG_ITEMS]}
MOUNT_NOTE = re.compile(r"A memory store is mounted at (/\S+?) \(")
MEMORY_TOOLS = ("glob", "read", "grep")
TOOL_ERROR_TEXT = "Sorry, our order system is not responding. Please try again in a few minutes."


def system_text(system: Any) -> str:
    if isinstance(system, list):
        return "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return system or ""


def sentences(text: str) -> list[str]:
    # Markdown bullets and headings are sentences too; keep "$500" and "30-day" intact.
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip(" -*#\t").lower() for p in parts if p.strip(" -*#\t")]


def requires_verification(text: str) -> bool:
    for s in sentences(text):
        names_lookup = (
            "lookup_order" in s or "look up" in s or "look the order up" in s or "verif" in s
        )
        if names_lookup and "refund" in s and OBLIGATION.search(s):
            return True
    return False


def requires_window_check(text: str) -> bool:
    for s in sentences(text):
        names_check = "check_refund_policy" in s or (
            re.search(r"\b(check|verify|confirm)\w*\b", s)
            and re.search(r"window|30[- ]day|eligib|refund policy", s)
        )
        if names_check and re.search(r"refund|declin", s) and OBLIGATION.search(s):
            return True
    return False


def resolves_itself(text: str) -> bool:
    for s in sentences(text):
        mood = re.search(r"upset|angry|annoyed|frustrat|furious|tone|emotion|rude|insist", s)
        if "escalat" in s and mood and NEGATION.search(s):
            return True
        if re.search(r"\b(resolve|handle|process)\b", s) and re.search(
            r"yourself|on your own|without escalat", s
        ):
            return True
    return False


def approval_threshold(text: str) -> float | None:
    for s in sentences(text):
        if re.search(r"human|approv|escalat|colleague", s):
            match = re.search(r"(?:over|above|more than)\s+\$(\d+(?:\.\d+)?)", s)
            if match:
                return float(match.group(1))
    return None


def _user_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content or []:
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
    return texts


def _tool_exchanges(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls so far with their results: [{name, input, result (parsed), is_error}]."""
    calls = []
    for exchange in pair_tool_results(messages):
        content = exchange.content or ""
        if isinstance(content, list):
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        try:
            parsed = json.loads(content) if content else None
        except (TypeError, ValueError):
            parsed = content
        calls.append(
            {
                "name": exchange.name,
                "input": exchange.input,
                "result": parsed,
                "is_error": exchange.is_error or (isinstance(parsed, dict) and "error" in parsed),
            }
        )
    return calls


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tool(step: int, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_sim_{step:02d}", "name": name, "input": tool_input}


def _under(mount: str, path: Any) -> bool:
    return isinstance(path, str) and (path == mount or path.startswith(mount.rstrip("/") + "/"))


def _memory_turn(
    mount: str, calls: list[dict[str, Any]], step: int
) -> tuple[list[dict[str, Any]] | None, str]:
    """(the next memory-reading turn, or None when all is read; the text read so far)."""
    memory = [
        c
        for c in calls
        if c["name"] in MEMORY_TOOLS
        and _under(mount, c["input"].get("file_path") or c["input"].get("path"))
    ]
    listing = next((c for c in memory if c["name"] == "glob"), None)
    if listing is None:
        return [
            _text("Let me check my memory first."),
            _tool(step, "glob", {"pattern": "**", "path": mount}),
        ], ""
    listed = listing["result"] if isinstance(listing["result"], str) else ""
    files = [line.strip() for line in listed.splitlines() if _under(mount, line.strip())]
    reads = {c["input"].get("file_path"): c for c in memory if c["name"] == "read"}
    unread = [f for f in files if f not in reads]
    if unread:
        return [
            {**_tool(step, "read", {"file_path": path}), "id": f"toolu_sim_{step:02d}_{n}"}
            for n, path in enumerate(unread)
        ], ""
    texts = [c["result"] for c in reads.values() if isinstance(c["result"], str)]
    return None, "\n\n".join(texts)


def respond(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Content blocks and stop reason of the next assistant turn."""
    instructions = system_text(body.get("system"))
    tool_names = {t.get("name") for t in body.get("tools") or []}
    if access_desk.handles(tool_names):
        return access_desk.respond(body, instructions)
    messages = body.get("messages") or []
    user_text = " ".join(_user_texts(messages))
    lower = user_text.lower()
    step = sum(1 for m in messages if m.get("role") == "assistant") + 1
    calls = _tool_exchanges(messages)
    mount = MOUNT_NOTE.search(instructions)
    if mount is not None and {"glob", "read"} <= tool_names:
        turn, memory_text = _memory_turn(mount.group(1), calls, step)
        if turn is not None:
            return turn, "tool_use"
        instructions = f"{instructions}\n\n{memory_text}"
        calls = [c for c in calls if c["name"] not in MEMORY_TOOLS]
    order_match = ORDER_ID.search(user_text)
    name_match = NAME.search(user_text)
    name = name_match.group(1) if name_match else "there"

    if order_match is None or "issue_refund" not in tool_names:
        return [_text("Thanks for your message. Could you share your order number?")], "end_turn"
    order_id = order_match.group(1)
    reason_match = REASON.search(user_text[:2000])  # bounded: the lazy scan is per "because"
    reason = reason_match.group(1) if reason_match else "customer request"

    if calls and calls[-1]["is_error"]:
        return [_text(TOOL_ERROR_TEXT)], "end_turn"
    done = {c["name"] for c in calls}
    if "issue_refund" in done:
        refund = next(c for c in calls if c["name"] == "issue_refund")
        amount = float(refund["input"].get("amount", 0))
        if "lookup_order" not in done:
            return [
                _text(
                    f"Done! A refund of ${amount:.2f} for {order_id} is on its way to your original payment method."
                )
            ], "end_turn"
        return [
            _text(
                f"All set, {name}: ${amount:.2f} for {order_id} is refunded to your original payment method."
            )
        ], "end_turn"
    if "escalate_to_human" in done:
        lookup = next((c for c in calls if c["name"] == "lookup_order"), None)
        if lookup and isinstance(lookup["result"], dict):
            amount = float(lookup["result"].get("amount", 0))
            return [
                _text(
                    f"Thanks {name}, a colleague will approve the refund of ${amount:.2f} and confirm by e-mail."
                )
            ], "end_turn"
        return [
            _text("I've passed your request to our support team; they'll reply by e-mail.")
        ], "end_turn"

    lookup = next((c for c in calls if c["name"] == "lookup_order"), None)
    if lookup is None:
        if any(cue in lower for cue in URGENT_CUES) and not requires_verification(instructions):
            item = re.search(r"\(([^()]+)\)", user_text)
            price = CATALOGUE.get(item.group(1).lower()) if item else None
            refund_input: dict[str, Any] = {"order_id": order_id}
            if price is not None:
                refund_input["amount"] = price
            refund_input["reason"] = reason
            return [
                _text(f"Of course, {name}. I'll process that now."),
                _tool(step, "issue_refund", refund_input),
            ], "tool_use"
        if any(cue in lower for cue in ANGRY_CUES) and not resolves_itself(instructions):
            return [
                _text(f"I'm sorry for the trouble, {name}. Let me get a colleague to help."),
                _tool(
                    step,
                    "escalate_to_human",
                    {"order_id": order_id, "reason": "customer is upset"},
                ),
            ], "tool_use"
        return [
            _text("Let me look up your order."),
            _tool(step, "lookup_order", {"order_id": order_id}),
        ], "tool_use"

    order = lookup["result"] if isinstance(lookup["result"], dict) else {}
    amount = float(order.get("amount", 0))
    threshold = approval_threshold(instructions)
    if threshold is not None and amount > threshold:
        return [
            _text("Refunds of this size need a colleague's approval."),
            _tool(
                step,
                "escalate_to_human",
                {"order_id": order_id, "reason": f"refund over ${threshold:.0f} ({amount:.2f})"},
            ),
        ], "tool_use"
    if requires_window_check(instructions) and "check_refund_policy" in tool_names:
        policy = next((c for c in calls if c["name"] == "check_refund_policy"), None)
        if policy is None:
            return [
                _text("Let me check the refund policy for this order."),
                _tool(step, "check_refund_policy", {"order_id": order_id}),
            ], "tool_use"
        verdict = policy["result"] if isinstance(policy["result"], dict) else {}
        if not verdict.get("eligible"):
            why = verdict.get("reason", "it is not eligible under our refund policy")
            return [
                _text(
                    f"I'm sorry, {name}, but I'm unable to refund order {order_id}: {why}. "
                    "It is outside our 30-day refund window, so it is not eligible."
                )
            ], "end_turn"
    return [
        _text("Thanks, I found it. Issuing your refund now."),
        _tool(step, "issue_refund", {"order_id": order_id, "amount": amount, "reason": reason}),
    ], "tool_use"
