"""The simulated model: a deterministic Messages API behind the real SDK's HTTP transport.

`transport.SimulatedTransport` answers POST /v1/messages (and the batches endpoints). Requests
that force a tool (`tool_choice={"type": "tool"}`) go to a handler from `registry`; all other
requests are answered by the rule-following support agent in `agent`.
"""
