"""The simulated model's user simulator (`next_user_turn`): deterministic and honest.

It reads only the fenced data of the request (dreams/usersim.py builds it): the recorded user
turns and how many of them the user has said. The user's next message is the next recorded user turn not
yet said (the n-th user message of the conversation is the n-th recorded one); once every
recorded turn is said, the user is done. It never invents facts the recording lacks.
"""

import json
from typing import Any

from dreams.prompts import unfence
from dreams.simulated.registry import register
from dreams.usersim import USER_TOOL


def _data(request: dict[str, Any]) -> dict[str, Any]:
    for message in request.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            for body in unfence(block.get("text", "") if isinstance(block, dict) else ""):
                try:
                    value = json.loads(body)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
    return {}


@register(USER_TOOL)
def handle_next_user_turn(request: dict[str, Any]) -> dict[str, Any]:
    data = _data(request)
    recorded = [t for t in data.get("recorded_user_turns") or [] if isinstance(t, str)]
    said = data.get("user_turns_so_far")
    if not isinstance(said, int) or said < 0:
        said = 0
    if said < len(recorded):
        return {"done": False, "message": recorded[said]}
    return {"done": True, "message": ""}
