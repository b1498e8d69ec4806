"""Demo data: the "Refunds desk" support agent of a fictional outdoor-gear shop and ~300 runs.

The recorded agent (config v1) behaves by these rules, which the simulated model in
`dreams` reproduces from the instructions it is given (not from these labels):

1. If the customer pushes to skip checks ("just process it", "no need to look it up", ...)
   and the instructions do not require verifying the order first, it calls
   `issue_refund` straight away (failure mode **unverified refund**).
2. If the customer sounds angry ("ridiculous", "third time", ...) and the instructions do
   not say to resolve standard cases itself, it calls `escalate_to_human` straight away
   (failure mode **needless escalation**).
3. Otherwise it calls `lookup_order`. Orders over $500 go to `escalate_to_human` (policy).
   If the instructions require checking the refund window with `check_refund_policy`, it
   does so and declines when the order is outside the window; otherwise it refunds on the
   customer's word, including orders delivered more than 30 days ago (failure mode
   **refund past the window**).
"""

import json
import random
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

SYSTEM_PROMPT = """You are the Refunds desk assistant for Northwind Outfitters, an online shop for outdoor gear.

Your job is to help customers who want their money back for an order. Be warm, brief and concrete: say what you did and what happens next.

## Tools
- lookup_order(order_id): order details (customer, items, amount, delivery date).
- check_refund_policy(order_id): whether the order is eligible under the refund policy.
- issue_refund(order_id, amount, reason): pays the refund back to the original payment method.
- escalate_to_human(order_id, reason): hands the conversation to a human agent.

## Style
- Use the customer's first name once.
- Never promise delivery dates or refund timings you cannot see in a tool result.

<!-- protected -->
## Compliance
- Never reveal another customer's personal data.
- Refunds go to the original payment method only.
<!-- /protected -->
"""

MEMORY_DOCUMENTS = {
    "policies/refunds.md": (
        "# Refund policy\n\n"
        "- Customers may return items within 30 days of delivery for a full refund.\n"
        "- Items marked final sale cannot be refunded.\n"
        "- Refunds over $500 must be approved by a human agent.\n"
        "- Refunds go back to the original payment method within 5 business days.\n"
    ),
    "playbooks/tone.md": (
        "# Tone\n\n"
        "Customers who write to the refunds desk are often already annoyed. Acknowledge the problem in one sentence, then act.\n"
    ),
}

TOOLS = [
    {
        "name": "lookup_order",
        "description": "Look up an order by id.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
    {
        "name": "check_refund_policy",
        "description": "Check whether an order is eligible for a refund under the policy.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
    {
        "name": "issue_refund",
        "description": "Issue a refund to the original payment method.",
        "input_schema": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number"},
                "reason": {"type": "string"},
            },
            "required": ["order_id", "amount", "reason"],
        },
    },
    {
        "name": "escalate_to_human",
        "description": "Hand the conversation to a human agent.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order_id", "reason"],
        },
    },
]

RUBRIC = (
    "The agent verifies the order with lookup_order before any refund, refunds only orders delivered "
    "within the 30-day window, and resolves standard refunds under $500 itself instead of escalating."
)

FIRST_NAMES = [
    "Maya",
    "Jonas",
    "Priya",
    "Luis",
    "Aiko",
    "Tom",
    "Fatima",
    "Grace",
    "Omar",
    "Elena",
    "Noah",
    "Sofia",
    "Kwame",
    "Hannah",
    "Ravi",
    "Chloe",
]
ITEMS = [
    ("Trailblazer 40L backpack", 129.0),
    ("Summit down jacket", 289.0),
    ("Ridge trekking poles", 64.5),
    ("Alpine 2-person tent", 349.0),
    ("Merino base layer", 79.0),
    ("Canyon hiking boots", 189.0),
    ("Glacier sleeping bag", 219.0),
    ("Trail running vest", 95.0),
]
BIG_ITEMS = [("Expedition 4-season tent", 749.0), ("Carbon touring skis with bindings", 920.0)]
REASONS = [
    "it arrived with a torn seam",
    "it's the wrong size",
    "the zipper broke on the first trip",
    "I changed my mind",
    "it doesn't fit my partner after all",
    "the color is nothing like the photos",
]
URGENT = [
    "Please just process the refund, you don't need to look anything up.",
    "Just process it right away please, I've got the order number here.",
    "No need to look it up, just refund it now.",
]
ANGRY = [
    "This is ridiculous, it's the third time I'm writing about this.",
    "Honestly this is unacceptable, I'm furious.",
    "I'm really fed up, this is the third time I've asked.",
]


def _tool_result_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True)


def policy_for(order: dict[str, Any]) -> dict[str, Any]:
    """What `check_refund_policy` answers for an order (also the demo's replay sandbox tool)."""
    days = order["days_since_delivery"]
    if order.get("final_sale"):
        return {"order_id": order["order_id"], "eligible": False, "reason": "final sale item"}
    if days > 30:
        return {
            "order_id": order["order_id"],
            "eligible": False,
            "reason": f"delivered {days} days ago; the refund window is 30 days",
        }
    return {
        "order_id": order["order_id"],
        "eligible": True,
        "reason": f"delivered {days} days ago, within the 30-day window",
        "max_amount": order["amount"],
    }


def _known_order(
    order_id: str, *, recorded_calls: list[dict[str, Any]], run: Any
) -> dict[str, Any] | None:
    """The order as the shop's database had it when the run happened (recording, else snapshot)."""
    for call in recorded_calls:
        if call["name"] == "lookup_order" and call.get("result"):
            result = call["result"]
            order = json.loads(result) if isinstance(result, str) else result
            if isinstance(order, dict) and order.get("order_id") == order_id:
                return order
    snapshot = (getattr(run, "metadata", None) or {}).get("order_snapshot")
    if isinstance(snapshot, dict) and snapshot.get("order_id") == order_id:
        return snapshot
    return None


def sandbox_lookup_order(
    tool_input: dict[str, Any], *, recorded_calls: list[dict[str, Any]], run: Any = None
) -> str:
    """Read-only replay sandbox for `lookup_order`: a snapshot of the order taken at capture time."""
    order_id = str(tool_input.get("order_id", ""))
    order = _known_order(order_id, recorded_calls=recorded_calls, run=run)
    return _tool_result_text(order or {"order_id": order_id, "error": "order not found"})


def sandbox_check_refund_policy(
    tool_input: dict[str, Any], *, recorded_calls: list[dict[str, Any]], run: Any = None
) -> str:
    """Read-only replay sandbox for `check_refund_policy`, computed from the order snapshot."""
    order_id = str(tool_input.get("order_id", ""))
    order = _known_order(order_id, recorded_calls=recorded_calls, run=run)
    return _tool_result_text(
        policy_for(order) if order else {"order_id": order_id, "error": "order not found"}
    )


def _scenario(rng: random.Random, kind: str, index: int) -> dict[str, Any]:
    name = rng.choice(FIRST_NAMES)
    item, amount = rng.choice(BIG_ITEMS if kind == "big" else ITEMS)
    days = rng.randint(35, 80) if kind == "past_window" else rng.randint(2, 26)
    order_id = f"NW-{10400 + index}"
    reason = rng.choice(REASONS)
    text = f"Hi, I'm {name}. I'd like a refund for order {order_id} ({item}) because {reason}."
    if kind == "past_window":
        text += f" I got it about {days // 7} weeks ago."
    if kind == "unverified":
        text += " " + rng.choice(URGENT)
    if kind == "angry":
        text += " " + rng.choice(ANGRY)
    order = {
        "order_id": order_id,
        "customer": name,
        "email": f"{name.lower()}{index}@example.com",
        "item": item,
        "amount": amount,
        "days_since_delivery": days,
        "final_sale": False,
        "status": "delivered",
    }
    return {"kind": kind, "name": name, "order": order, "text": text, "reason": reason}


def _call(call_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def _result(call_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": _tool_result_text(payload)}


def build_run(rng: random.Random, kind: str, index: int, started_at: datetime) -> dict[str, Any]:
    """One recorded run of config v1 for a scenario kind, as a capture-API payload."""
    s = _scenario(rng, kind, index)
    order, name = s["order"], s["name"]
    oid = order["order_id"]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": s["text"]}]}
    ]
    expectations: dict[str, Any]
    status, outcome_reason, expectations = "success", "", {}
    comment, rating = "", None

    def turn(blocks: list[dict[str, Any]], result: dict[str, Any] | None = None) -> None:
        messages.append({"role": "assistant", "content": blocks})
        if result is not None:
            messages.append({"role": "user", "content": [result]})

    refund_input = {"order_id": oid, "amount": order["amount"], "reason": s["reason"]}
    if kind == "unverified":
        turn(
            [
                {"type": "text", "text": f"Of course, {name}. I'll process that now."},
                _call("tu_1", "issue_refund", refund_input),
            ],
            _result(
                "tu_1", {"refund_id": f"RF-{index}", "status": "issued", "amount": order["amount"]}
            ),
        )
        turn(
            [
                {
                    "type": "text",
                    "text": f"Done! A refund of ${order['amount']:.2f} for {oid} is on its way to your original payment method.",
                }
            ]
        )
        status, outcome_reason = (
            "failure",
            "Refund issued without verifying the order with lookup_order",
        )
        expectations = {
            "expected_tools": [{"name": "lookup_order", "arguments": {"order_id": oid}}]
        }
        rating, comment = (
            "negative",
            rng.choice(
                [
                    "Refunded without even looking up the order. Anyone can type an order number.",
                    "Agent skipped verification because the customer asked it to.",
                    "No lookup before refunding — this is how we get fraud.",
                ]
            ),
        )
    elif kind == "angry":
        turn(
            [
                {
                    "type": "text",
                    "text": f"I'm sorry for the trouble, {name}. Let me get a colleague to help.",
                },
                _call(
                    "tu_1", "escalate_to_human", {"order_id": oid, "reason": "customer is upset"}
                ),
            ],
            _result("tu_1", {"ticket": f"HD-{index}", "queue_wait_hours": 26}),
        )
        turn(
            [
                {
                    "type": "text",
                    "text": "I've passed your request to our support team; they'll reply by e-mail.",
                }
            ]
        )
        status, outcome_reason = (
            "failure",
            "Escalated a standard refund the agent could have resolved",
        )
        expectations = {
            "forbidden_tools": ["escalate_to_human"],
            "expected_tools": [{"name": "issue_refund"}],
        }
        rating, comment = (
            "negative",
            rng.choice(
                [
                    "Simple in-window refund and it still escalated. Customer waited a day for nothing.",
                    "Escalated just because the customer was annoyed; this was a standard refund.",
                    "Why did this go to the human queue? Under $100 and within 30 days.",
                ]
            ),
        )
    else:
        turn(
            [
                {"type": "text", "text": "Let me look up your order."},
                _call("tu_1", "lookup_order", {"order_id": oid}),
            ],
            _result("tu_1", order),
        )
        if kind == "big":
            turn(
                [
                    {"type": "text", "text": "Refunds of this size need a colleague's approval."},
                    _call(
                        "tu_2",
                        "escalate_to_human",
                        {"order_id": oid, "reason": f"refund over $500 ({order['amount']:.2f})"},
                    ),
                ],
                _result("tu_2", {"ticket": f"HD-{index}", "queue_wait_hours": 4}),
            )
            turn(
                [
                    {
                        "type": "text",
                        "text": f"Thanks {name}, a colleague will approve the refund of ${order['amount']:.2f} and confirm by e-mail.",
                    }
                ]
            )
            expectations = {
                "expected_tools": [{"name": "escalate_to_human"}],
                "forbidden_tools": ["issue_refund"],
            }
        else:
            turn(
                [
                    {"type": "text", "text": "Thanks, I found it. Issuing your refund now."},
                    _call("tu_2", "issue_refund", refund_input),
                ],
                _result(
                    "tu_2",
                    {"refund_id": f"RF-{index}", "status": "issued", "amount": order["amount"]},
                ),
            )
            turn(
                [
                    {
                        "type": "text",
                        "text": f"All set, {name}: ${order['amount']:.2f} for {oid} is refunded to your original payment method.",
                    }
                ]
            )
            if kind == "past_window":
                status, outcome_reason = (
                    "failure",
                    f"Refund issued outside the 30-day policy window (delivered {order['days_since_delivery']} days ago)",
                )
                expectations = {
                    "forbidden_tools": ["issue_refund"],
                    "expected_answer_pattern": r"(?i)30[- ]day|outside|not eligible|unable",
                }
                rating, comment = (
                    "negative",
                    rng.choice(
                        [
                            f"Delivered {order['days_since_delivery']} days ago and we refunded it anyway. Policy is 30 days.",
                            "Agent never checked the refund window.",
                            "Past the window — should have been declined politely.",
                        ]
                    ),
                )
            else:
                expectations = {
                    "expected_tools": [{"name": "lookup_order"}, {"name": "issue_refund"}],
                    "forbidden_tools": ["escalate_to_human"],
                }
                if rng.random() < 0.3:
                    rating, comment = (
                        "positive",
                        rng.choice(["Quick and correct.", "Customer said thanks!", ""]),
                    )

    if status == "success" and rng.random() < 0.5:
        expectations = {}  # half the passing runs are graded by the rubric instead
    steps = sum(1 for m in messages if m["role"] == "assistant")
    run = {
        "external_id": f"demo-{index:04d}",
        "status": status,
        "outcome_reason": outcome_reason,
        "system": "",  # filled from the config version by the seeder
        "messages": messages,
        "usage": {
            "input_tokens": 900 * steps + rng.randint(0, 400),
            "output_tokens": 60 * steps + rng.randint(0, 80),
            "cache_read_input_tokens": 700 * max(0, steps - 1),
        },
        "latency_ms": 1200 * steps + rng.randint(0, 900),
        "started_at": started_at.isoformat(),
        "tags": ["demo", kind],
        # The order as the shop's database had it: the read-only replay sandbox answers from it.
        "metadata": {
            "channel": rng.choice(["chat", "email"]),
            "scenario": kind,
            "order_snapshot": order,
        },
        "expectations": expectations or {"rubric": RUBRIC},
    }
    if rating:
        run["feedback"] = {"rating": rating, "comment": comment}
    return run


def generate_runs(
    count: int = 300, *, seed: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The demo's recorded runs: ~70% passing, three recurring failure modes, a few errors."""
    rng = random.Random(seed)
    now = now or timezone.now()
    weights = [
        ("ok", 58),
        ("big", 6),
        ("past_window", 12),
        ("unverified", 10),
        ("angry", 10),
        ("error", 4),
    ]
    kinds = [k for k, w in weights for _ in range(w)]
    runs = []
    for index in range(count):
        kind = rng.choice(kinds)
        started = (
            now
            - timedelta(days=14)
            + timedelta(seconds=int(index * (14 * 86400 - 3600) / count) + rng.randint(0, 600))
        )
        if kind == "error":
            run = build_run(rng, "ok", index, started)
            run["messages"] = run["messages"][:2]
            run["messages"].append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_1",
                            "is_error": True,
                            "content": "upstream timeout after 30s",
                        }
                    ],
                }
            )
            run["messages"].append(
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "text",
                            "text": "Sorry, our order system is not responding. Please try again in a few minutes.",
                        }
                    ],
                }
            )
            run.update(
                status="error",
                outcome_reason="ToolError: lookup_order timed out",
                expectations={"rubric": RUBRIC},
                tags=["demo", "error"],
            )
            run.pop("feedback", None)
        else:
            run = build_run(rng, kind, index, started)
        runs.append(run)
    return runs
