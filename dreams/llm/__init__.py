"""The model gateway (`get_gateway()`): budgets, retries, accounting, caching, batches.

Split by concept: `gateway` (SDK clients and calls), `budget` (the guard), `accounting`
(ModelCall rows), `base` (errors and the call context).
"""

from dreams.llm.base import (
    BudgetExceeded,
    CallContext,
    ModelError,
    ModelRequestError,
    ModelUnavailable,
    UnusableAnswer,
    usage_dict,
)
from dreams.llm.budget import month_start, tokens_spent
from dreams.llm.gateway import Gateway, estimate_call_tokens, get_gateway, with_cached_prefix

__all__ = [
    "BudgetExceeded",
    "CallContext",
    "Gateway",
    "ModelError",
    "ModelRequestError",
    "ModelUnavailable",
    "UnusableAnswer",
    "estimate_call_tokens",
    "get_gateway",
    "month_start",
    "tokens_spent",
    "usage_dict",
    "with_cached_prefix",
]
