"""Replay one recorded run with a config version, in a sandbox, through the model gateway.

The request is rebuilt from the version (system prompt, then memory documents rendered by
`render_instructions`), its tools and model (else the recording's), and the run's first user
turn(s). Tools answer in tiers: an unused recorded call with the same name and canonical
arguments gets its recorded result; else a read-only tool gets the agent's sandbox callable
(`Agent.sandbox_tools`) or an "not available in replay" error (the replay is *off-recording*);
a write tool (`Agent.write_tools`) with new arguments stops the replay as *unverifiable*.
A *pure* tool (`Agent.pure_tools`: a calculator, a think tool) with a sandbox callable is answered
by it whenever its arguments differ from the recording, and pure calls never count as leaving
the recording.

Later recorded user turns are fed in order while the replay is still on the recording. Once it
has left the recording before a later user turn, the *simulated user* (dreams/usersim.py) writes
the user's turns instead (`Agent.simulated_user`; off: the replay stops, `diverged_before_turn`).

The loop of one replay, for any caller (sync, async, batched)::

    session = ReplaySession(run=run, version=version, agent=agent, priced=gateway.priced)
    while not session.done:
        call = session.next_call()          # NextCall(purpose, kwargs)
        message = gateway.create_message(agent=agent, purpose=call.purpose, **call.kwargs)
        session.feed(message)               # the agent's turn, or the simulated user's answer

`call.purpose` is "replay" for the agent's turns and "simulated_user" for the user's.

A run recorded in a Managed Agents session replays with memory the way that session read it
(dreams/managed/mount.py): the store's files mounted, a note in the system prompt, and `read` /
`glob` / `grep` calls on the mount answered from the replayed version's documents (source
`memory`), never from the recording; those reads are environment, not actions, so they do not
count towards divergence.

With the agent's sandbox environment (`Agent.environment_url`, dreams/environments.py) every
tool call is executed there instead, matched or not, so the environment's final state is the
replay's own; a matched call keeps its recorded result beside the environment's, and a
difference is *environment drift*. The session is opened (and reset with the run's snapshot)
at the first call, asked for its final-state check when the replay ends, and closed. Many
replays at once (`replay_many`, the experiments' async path) share one event loop for their MCP
clients through an anyio portal; each still has its own session.
"""

import asyncio
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from anthropic.types import Message
from django.conf import settings
from django.utils.module_loading import import_string

from agents.models import Agent, ConfigVersion, Run
from agents.pricing import cost_of
from agents.transcripts import count_steps, final_answer, iter_tool_calls, pair_tool_results
from dreams.environments import (
    RESERVED,
    EnvironmentSession,
    EnvironmentUnavailable,
    same_result,
    snapshot_of,
)
from dreams.llm import Gateway, ModelError, get_gateway, usage_dict
from dreams.managed import mount as memory_mount
from dreams.usersim import (
    UserSimulatorError,
    message_text,
    nothing_left_to_say,
    parse_user_turn,
    user_turn_request,
)

NOT_AVAILABLE = "Tool {name} is not available in replay: no recorded result for these arguments."
RESERVED_TOOL = "Tool {name} is reserved for Reverie's sandbox environment."
RESULT_CLIP = 2000  # characters of a tool result kept in Replay.tool_calls (messages hold all)


class Stop:
    END_TURN = "end_turn"
    STEP_LIMIT = "step_limit"
    DIVERGED_BEFORE_TURN = "diverged_before_turn"
    UNVERIFIABLE = "unverifiable_write"
    ERROR = "error"
    # The model's own stop_reason ended the replay: a cut answer or a refusal is not a finish.
    MAX_TOKENS = "max_tokens"
    REFUSAL = "refusal"
    # The sandbox environment could not be reached (or dropped the session): no verdict.
    ENVIRONMENT_UNAVAILABLE = "environment_unavailable"
    # The simulated user wrote REVERIE_SIMULATED_USER_MAX_TURNS turns and the agent still talks.
    USER_LIMIT = "simulated_user_limit"


REPLAY = "replay"
SIMULATED_USER = "simulated_user"


# Model stop reasons that end a replay early, whatever the turn holds.
CUT_SHORT = {"max_tokens": Stop.MAX_TOKENS, "refusal": Stop.REFUSAL}


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value)).normalize()
        return int(number) if number == number.to_integral_value() else float(number)
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def canonical_arguments(arguments: Any) -> str:
    """Key order, whitespace inside strings and number forms (1, 1.0, 1e0) do not matter."""
    return json.dumps(_canonical(arguments or {}), sort_keys=True, separators=(",", ":"))


def arguments_contain(arguments: dict[str, Any], subset: dict[str, Any]) -> bool:
    """Whether `arguments` holds every key of `subset` with a canonically equal value."""
    return all(
        key in arguments and canonical_arguments(arguments[key]) == canonical_arguments(value)
        for key, value in (subset or {}).items()
    )


def render_instructions(
    version: ConfigVersion, *, mount: memory_mount.MemoryMount | None = None
) -> str:
    """System text of a version: the system prompt, then each memory document (sorted by path).

    Each document is wrapped as ``<memory path="…">…</memory>`` so the model can tell them apart.
    With a `mount` (a Managed Agents session) the documents are files to read instead, and only
    the note naming the mount follows the prompt.
    """
    parts = [version.system_prompt.strip()] if version.system_prompt.strip() else []
    if mount is not None:
        return "\n\n".join([*parts, mount.note()])
    for path in sorted(version.memory_documents or {}):
        parts.append(f'<memory path="{path}">\n{version.memory_documents[path].strip()}\n</memory>')
    return "\n\n".join(parts)


@dataclass
class RecordedCall:
    name: str
    input: dict[str, Any]
    key: str
    content: Any
    is_error: bool
    used: bool = False


@dataclass
class Recording:
    initial: list[dict[str, Any]]
    later_turns: list[tuple[int, dict[str, Any]]]  # (recorded tool calls before it, user message)
    calls: list[RecordedCall]
    steps: int

    @classmethod
    def from_run(cls, run: Run) -> "Recording":
        messages = run.messages or []
        calls = [
            RecordedCall(
                name=e.name,
                input=e.input,
                key=canonical_arguments(e.input),
                content=e.content if e.content is not None else "",
                is_error=e.is_error,
            )
            for e in pair_tool_results(messages)
        ]
        calls_before_message: list[int] = []
        made = 0
        for message in messages:
            calls_before_message.append(made)
            if message["role"] == "assistant":
                made += sum(1 for b in message.get("content") or [] if b.get("type") == "tool_use")
        initial: list[dict[str, Any]] = []
        later: list[tuple[int, dict[str, Any]]] = []
        seen_assistant = False
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                seen_assistant = True
                continue
            texts = [b for b in message.get("content") or [] if b.get("type") != "tool_result"]
            if not texts:
                continue
            if not seen_assistant:
                initial.append({"role": "user", "content": texts})
            else:
                later.append((calls_before_message[index], {"role": "user", "content": texts}))
        return cls(initial=initial, later_turns=later, calls=calls, steps=count_steps(messages))

    def user_texts(self) -> list[str]:
        """Every recorded user turn's text, in order (what the simulated user is given)."""
        turns = [*self.initial, *(turn for _, turn in self.later_turns)]
        return [text for text in (message_text(t) for t in turns) if text]

    def take(self, name: str, arguments: dict[str, Any], key: str = "") -> RecordedCall | None:
        key = key or canonical_arguments(arguments)
        for call in self.calls:
            if not call.used and call.name == name and call.key == key:
                call.used = True
                return call
        return None


@dataclass
class ReplayResult:
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    steps: int = 0
    stop_reason: str = ""
    model_stop_reason: str = ""  # the model's stop_reason on the last replayed turn
    off_recording: bool = False
    unverifiable: bool = False
    sandboxed: int = 0
    divergence_step: int | None = None
    divergence_kind: str = ""
    error: str = ""
    # Indices in `messages` of the user turns the simulated user wrote, and what it spent.
    simulated_turns: list[int] = field(default_factory=list)
    simulated_user_usage: dict[str, int] = field(default_factory=dict)
    environment: bool = False  # tool calls were executed in the agent's sandbox environment
    environment_check: dict[str, str] | None = None  # {verdict, reason} from reverie_check
    environment_error: str = ""  # why the environment was unavailable
    drift: int = 0  # matched calls whose environment result differs from the recording

    @property
    def environment_unavailable(self) -> bool:
        return self.stop_reason == Stop.ENVIRONMENT_UNAVAILABLE

    @property
    def total_tokens(self) -> int:
        return sum(self.usage.values())

    @property
    def simulated_user_tokens(self) -> int:
        return sum(self.simulated_user_usage.values())

    @property
    def final_text(self) -> str:
        return final_answer(self.messages)


def _block_dict(block: Any) -> dict[str, Any]:
    data = block.model_dump(mode="json", exclude_none=True)
    if data.get("type") == "text":
        return {"type": "text", "text": data.get("text", "")}
    if data.get("type") == "tool_use":
        return {"type": "tool_use", "id": data["id"], "name": data["name"], "input": data["input"]}
    return data


@dataclass(frozen=True)
class NextCall:
    """The model call a replay needs next: the agent's turn or the simulated user's."""

    purpose: str  # REPLAY | SIMULATED_USER
    kwargs: dict[str, Any]


class ReplaySession:
    """The loop of one replay as a state machine: `next_call()` → model → `feed(message)`."""

    def __init__(
        self,
        *,
        run: Run,
        version: ConfigVersion,
        agent: Agent,
        priced: bool = True,
        environment_url: str | None = None,
        simulated_user: bool | None = None,
        portal: Any = None,
    ) -> None:
        self.run = run
        self.portal = portal  # an anyio BlockingPortal the environment client runs on, if any
        self.priced = priced  # the simulated and recorded backends cost nothing
        self.agent = agent
        self.recording = Recording.from_run(run)
        self.mount = memory_mount.mount_for_run(run)
        self.documents: dict[str, str] = dict(version.memory_documents or {})
        self.system = render_instructions(version, mount=self.mount)
        self.tools = list(version.tools or run.tools or [])
        if self.mount is not None:
            named = {t.get("name") for t in self.tools}
            self.tools += [t for t in memory_mount.TOOLS if t["name"] not in named]
        self.model = version.model or run.model or settings.REVERIE_REPLAY_MODEL
        self.step_limit = max(self.recording.steps, 1) + settings.REVERIE_REPLAY_STEP_MARGIN
        self.write_tools = set(agent.write_tools or [])
        self.pure_tools = set(agent.pure_tools or []) - self.write_tools
        self.sandbox_paths: dict[str, str] = dict(agent.sandbox_tools or {})
        self.environment_url = agent.environment_url if environment_url is None else environment_url
        self._environment: EnvironmentSession | None = None
        self.result = ReplayResult(
            messages=list(self.recording.initial), environment=bool(self.environment_url)
        )
        self.next_turn = 0
        # None: the agent's switch. The harness check passes False (it replays the recording).
        self.simulated_user = agent.simulated_user if simulated_user is None else simulated_user
        self.simulating = False  # the simulated user has taken over the user's side
        self._made_keys: list[str] = []  # canonical arguments of result.tool_calls, in order
        self.awaiting_user = False  # the next call is the simulated user's
        self.memory_steps = 0
        self.done = not self.result.messages
        if self.done:
            self.result.stop_reason = Stop.ERROR
            self.result.error = "the run has no user turn to replay"
        self._started = time.monotonic()

    def request(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.REVERIE_REPLAY_MAX_TOKENS,
            "messages": self.result.messages,
        }
        if self.system:
            kwargs["system"] = self.system
        if self.tools:
            kwargs["tools"] = self.tools
        return kwargs

    def next_call(self) -> NextCall:
        """The next model call: the agent's turn, or the simulated user's next message."""
        if self.awaiting_user:
            return NextCall(
                SIMULATED_USER,
                user_turn_request(
                    recorded_turns=self.recording.user_texts(),
                    brief=self.run.user_brief,
                    messages=self.result.messages,
                ),
            )
        return NextCall(REPLAY, self.request())

    def _recorded_calls(self) -> list[dict[str, Any]]:
        return iter_tool_calls(self.run.messages or [])

    def _sandbox(self, name: str) -> Callable[..., Any]:
        return import_string(self.sandbox_paths[name])

    def is_memory_call(self, name: str, arguments: dict[str, Any]) -> bool:
        return self.mount is not None and memory_mount.is_memory_call(
            self.mount, name, arguments or {}
        )

    @property
    def uses_environment(self) -> bool:
        return bool(self.environment_url)

    def _open_environment(self) -> EnvironmentSession:
        """The replay's environment session: opened and reset on first use."""
        if self._environment is None:
            session = EnvironmentSession(self.environment_url, portal=self.portal)
            session.open()
            self._environment = session
            session.reset(snapshot=snapshot_of(self.run.metadata), run_id=self.run.external_id)
        return self._environment

    def close_environment(self) -> None:
        """End the environment session, if one is open (safe to call twice)."""
        session, self._environment = self._environment, None
        if session is not None:
            session.close()

    def _answer_from_environment(self, block: dict[str, Any]) -> dict[str, Any]:
        """Execute the call in the environment; the recorded result is kept beside it."""
        name, arguments = block["name"], block.get("input") or {}
        key = canonical_arguments(arguments)
        recorded = self.recording.take(name, arguments, key)
        entry: dict[str, Any] = {"name": name, "input": arguments, "source": "environment"}
        self.result.tool_calls.append(entry)
        self._made_keys.append(key)
        if name in RESERVED:
            entry["is_error"] = True
            return {
                "type": "tool_result",
                "tool_use_id": block["id"],
                "content": RESERVED_TOOL.format(name=name),
                "is_error": True,
            }
        answer = self._open_environment().call_tool(name, arguments)  # may be unavailable
        entry["result"] = _clip(answer.content)
        if answer.is_error:
            entry["is_error"] = True
        if recorded is not None:
            entry["recorded"] = _clip(recorded.content)
            if recorded.is_error != answer.is_error or not same_result(
                recorded.content, answer.content
            ):
                entry["drift"] = True
                self.result.drift += 1
        result = {"type": "tool_result", "tool_use_id": block["id"], "content": answer.content}
        if answer.is_error:
            result["is_error"] = True
        return result

    def _answer_tool(self, block: dict[str, Any]) -> dict[str, Any] | None:
        """The tool_result for a tool_use, or None when the replay must stop (unverifiable)."""
        name, arguments = block["name"], block.get("input") or {}
        if self.mount is not None and self.is_memory_call(name, arguments):
            # The replayed version's memory, not the recording's: that is what changed.
            key = canonical_arguments(arguments)
            self.recording.take(name, arguments, key)
            self.result.tool_calls.append({"name": name, "input": arguments, "source": "memory"})
            self._made_keys.append(key)
            text, is_error = memory_mount.answer(self.mount, self.documents, name, arguments)
            result = {"type": "tool_result", "tool_use_id": block["id"], "content": text}
            if is_error:
                result["is_error"] = True
            return result
        if self.uses_environment:
            return self._answer_from_environment(block)
        key = canonical_arguments(arguments)
        recorded = self.recording.take(name, arguments, key)
        entry = {"name": name, "input": arguments, "source": "recording"}
        self.result.tool_calls.append(entry)
        self._made_keys.append(key)
        if recorded is not None:
            result = {
                "type": "tool_result",
                "tool_use_id": block["id"],
                "content": recorded.content,
            }
            if recorded.is_error:
                result["is_error"] = True
            return result
        if name in self.write_tools:
            entry["source"] = "unverifiable"
            return None
        if name in self.pure_tools:
            entry["pure"] = True
        if name in self.sandbox_paths:
            try:
                sandbox = self._sandbox(name)
                content = sandbox(arguments, recorded_calls=self._recorded_calls(), run=self.run)
                entry["source"] = "sandbox"
                self.result.sandboxed += 1
                if not isinstance(content, str):
                    content = json.dumps(content, sort_keys=True)
                return {"type": "tool_result", "tool_use_id": block["id"], "content": content}
            except Exception as exc:  # a sandbox bug must not kill the replay
                entry["source"] = "sandbox_error"
                self.result.off_recording = True
                return {
                    "type": "tool_result",
                    "tool_use_id": block["id"],
                    "content": f"Sandbox tool {name} failed: {type(exc).__name__}",
                    "is_error": True,
                }
        entry["source"] = "off_recording"
        self.result.off_recording = True
        return {
            "type": "tool_result",
            "tool_use_id": block["id"],
            "content": NOT_AVAILABLE.format(name=name),
            "is_error": True,
        }

    def _on_recording(self, calls_before: int) -> bool:
        pure = self.pure_tools
        made = [
            (c["name"], key)
            for c, key in zip(self.result.tool_calls, self._made_keys, strict=True)
            if c["name"] not in pure and c.get("source") != "memory"
        ]
        recorded = [
            (c.name, c.key)
            for c in self.recording.calls[:calls_before]
            if c.name not in pure and not self.is_memory_call(c.name, c.input)
        ]
        return made == recorded

    def feed(self, message: Message) -> None:
        """Take the answer to `next_call()`: the agent's turn or the simulated user's."""
        if self.awaiting_user:
            self._feed_user(message)
            return
        usage = usage_dict(message)
        for key, value in usage.items():
            self.result.usage[key] = self.result.usage.get(key, 0) + value
        if self.priced:
            self.result.cost_usd += cost_of(message.model or self.model, usage)
        content = [_block_dict(b) for b in message.content]
        self.result.messages.append({"role": "assistant", "content": content})
        self.result.steps += 1
        self.result.model_stop_reason = message.stop_reason or ""
        if self.result.model_stop_reason in CUT_SHORT:
            self._finish(CUT_SHORT[self.result.model_stop_reason])
            return
        uses = [b for b in content if b.get("type") == "tool_use"]
        if uses:
            results = []
            for block in uses:
                try:
                    answer = self._answer_tool(block)
                except EnvironmentUnavailable as exc:
                    self.result.environment_error = str(exc)
                    self._finish(Stop.ENVIRONMENT_UNAVAILABLE)
                    return
                if answer is None:
                    self.result.unverifiable = True
                    self._finish(Stop.UNVERIFIABLE)
                    return
                results.append(answer)
            self.result.messages.append({"role": "user", "content": results})
            if all(self.is_memory_call(b["name"], b.get("input") or {}) for b in uses):
                self.memory_steps += 1
            if self._over_step_limit():
                self._finish(Stop.STEP_LIMIT)
            return
        if not self.simulating and self.next_turn < len(self.recording.later_turns):
            calls_before, turn = self.recording.later_turns[self.next_turn]
            if self._on_recording(calls_before):
                self.next_turn += 1
                self.result.messages.append(turn)
                if self._over_step_limit():
                    self._finish(Stop.STEP_LIMIT)
                return
            if not self.simulated_user:
                self._finish(Stop.DIVERGED_BEFORE_TURN)
                return
            self.simulating = True  # the recorded turns no longer answer this conversation
        if not self.simulating:
            self._finish(Stop.END_TURN)
            return
        if self._over_step_limit():
            self._finish(Stop.STEP_LIMIT)
        elif nothing_left_to_say(
            recorded_turns=self.recording.user_texts(), messages=self.result.messages
        ):
            self._finish(Stop.END_TURN)  # everything said and nothing asked: no call needed
        elif len(self.result.simulated_turns) >= settings.REVERIE_SIMULATED_USER_MAX_TURNS:
            self._finish(Stop.USER_LIMIT)
        else:
            self.awaiting_user = True

    def _feed_user(self, message: Message) -> None:
        self.awaiting_user = False
        usage = usage_dict(message)
        for key, value in usage.items():
            self.result.simulated_user_usage[key] = (
                self.result.simulated_user_usage.get(key, 0) + value
            )
        if self.priced:
            model = message.model or settings.REVERIE_SIMULATED_USER_MODEL
            self.result.cost_usd += cost_of(model, usage)
        try:
            turn = parse_user_turn(message)
        except UserSimulatorError as exc:
            self.result.error = f"simulated user: {exc}"
            self._finish(Stop.ERROR)
            return
        if turn.done:
            self._finish(Stop.END_TURN)
            return
        self.result.simulated_turns.append(len(self.result.messages))
        self.result.messages.append(
            {"role": "user", "content": [{"type": "text", "text": turn.text}]}
        )

    def _over_step_limit(self) -> bool:
        # Steps that only read mounted memory are the environment's, not the agent's: they do not
        # use up the recording's steps (at most step_limit of them, so a loop still ends).
        counted = self.result.steps - min(self.memory_steps, self.step_limit)
        return counted >= self.step_limit

    def fail(self, error: ModelError) -> None:
        self.result.error = f"{type(error).__name__}: {error}"
        self._finish(Stop.ERROR)

    def _check_environment(self, reason: str) -> str:
        """Ask the environment for its final-state verdict; the stop reason to record."""
        # A conversation cut before a later user turn has no final state to judge.
        unfinished = (Stop.ERROR, Stop.ENVIRONMENT_UNAVAILABLE, Stop.DIVERGED_BEFORE_TURN)
        if not self.uses_environment or reason in unfinished:
            return reason
        try:
            check = self._open_environment().check()
        except EnvironmentUnavailable as exc:
            self.result.environment_error = str(exc)
            return Stop.ENVIRONMENT_UNAVAILABLE
        if check is not None:
            self.result.environment_check = {"verdict": check.verdict, "reason": check.reason}
        return reason

    def _finish(self, reason: str) -> None:
        self.done = True
        try:
            reason = self._check_environment(reason)
        finally:
            self.close_environment()
        self.result.stop_reason = reason
        self.result.latency_ms = int((time.monotonic() - self._started) * 1000)
        step, kind = divergence(
            self.result.tool_calls,
            self.recording.calls,
            self.result.messages,
            pure=self.pure_tools,
            environment=self.is_memory_call if self.mount is not None else None,
        )
        self.result.divergence_step, self.result.divergence_kind = step, kind


def _clip(content: Any) -> Any:
    if isinstance(content, str):
        return content[:RESULT_CLIP]
    text = json.dumps(content, ensure_ascii=False)
    return content if len(text) <= RESULT_CLIP else text[:RESULT_CLIP]


def divergence(
    made: list[dict[str, Any]],
    recorded: list[RecordedCall],
    messages: list[dict[str, Any]],
    *,
    pure: set[str] | frozenset[str] = frozenset(),
    environment: Callable[[str, dict[str, Any]], bool] | None = None,
) -> tuple[int | None, str]:
    """First assistant step (0-based) where the replay's tool calls leave the recording, and how.

    Calls of pure tools are left out on both sides: rewording a calculation changes nothing.
    Calls for which `environment(name, input)` holds (memory reads) are left out too.
    """
    if environment is not None:
        made = [m for m in made if m.get("source") != "memory"]
        recorded = [r for r in recorded if not environment(r.name, r.input)]
    steps: list[int] = []
    step = -1
    for message in messages:
        if message["role"] == "assistant":
            step += 1
            steps.extend(
                step
                for b in message["content"]
                if b.get("type") == "tool_use"
                and b.get("name") not in pure
                and not (environment and environment(b.get("name", ""), b.get("input") or {}))
            )
    if pure:
        made = [c for c in made if c["name"] not in pure]
        recorded = [c for c in recorded if c.name not in pure]
    for i, call in enumerate(made):
        if i >= len(recorded):
            return steps[i] if i < len(steps) else step, "extra"
        if call["name"] != recorded[i].name:
            return steps[i] if i < len(steps) else step, "tool"
        if canonical_arguments(call["input"]) != recorded[i].key:
            return steps[i] if i < len(steps) else step, "arguments"
    if len(made) < len(recorded):
        return max(step, 0), "missing"
    return None, ""


def call_for(gateway: Gateway, session: "ReplaySession") -> NextCall:
    """The session's next call; the recorded backend is also told whose turns to replay."""
    call = session.next_call()
    if gateway.recordings is not None:
        from dreams.simulated.recorded import RUN_HEADER

        call.kwargs["extra_headers"] = {RUN_HEADER: str(session.run.pk)}
    return call


def new_session(
    run: Run, version: ConfigVersion, gateway: Gateway, *, portal: Any = None
) -> ReplaySession:
    """A replay session on `gateway`; the recorded backend has no simulated user to call."""
    return ReplaySession(
        run=run,
        version=version,
        agent=run.agent,
        priced=gateway.priced,
        simulated_user=False if gateway.recordings is not None else None,
        portal=portal,
    )


def replay(
    run: Run,
    config_version: ConfigVersion,
    *,
    gateway: Gateway | None = None,
    experiment: Any = None,
    replay_row: Any = None,
    portal: Any = None,
) -> ReplayResult:
    """Replay `run` with `config_version` synchronously (one model call per step); with a
    `portal`, its environment session's client runs on that portal's event loop."""
    gateway = gateway or get_gateway()
    session = new_session(run, config_version, gateway, portal=portal)
    try:
        while not session.done:
            call = call_for(gateway, session)
            try:
                message = gateway.create_message(
                    agent=run.agent,
                    purpose=call.purpose,
                    experiment=experiment,
                    replay=replay_row,
                    cache_prefix=call.purpose == REPLAY,
                    **call.kwargs,
                )
            except ModelError as exc:
                session.fail(exc)
                break
            session.feed(message)
    finally:
        session.close_environment()
    return session.result


async def areplay(
    run: Run,
    config_version: ConfigVersion,
    *,
    gateway: Gateway | None = None,
    experiment: Any = None,
    replay_row: Any = None,
    portal: Any = None,
) -> ReplayResult:
    """Async twin of `replay` (AsyncAnthropic), for many replays at once in one task.

    `portal`: a BlockingPortal on this event loop; the environment's MCP client then runs on
    this loop (the blocking tool calls of `feed` wait on it from a worker thread) instead of
    on an event loop thread of its own per replay."""
    gateway = gateway or get_gateway()
    session = new_session(run, config_version, gateway, portal=portal)
    try:
        while not session.done:
            call = call_for(gateway, session)
            try:
                message = await gateway.acreate_message(
                    agent=run.agent,
                    purpose=call.purpose,
                    experiment=experiment,
                    replay=replay_row,
                    cache_prefix=call.purpose == REPLAY,
                    **call.kwargs,
                )
            except ModelError as exc:
                await asyncio.to_thread(session.fail, exc)
                break
            if session.uses_environment:
                # Environment calls block on the network: off the event loop, in a thread.
                await asyncio.to_thread(session.feed, message)
            else:
                session.feed(message)
    finally:
        if session.uses_environment:
            await asyncio.to_thread(session.close_environment)
    return session.result


def replay_many(
    runs: list[Run],
    config_version: ConfigVersion,
    *,
    gateway: Gateway,
    concurrency: int,
) -> list[ReplayResult]:
    """Replay `runs` (results in their order), at most `concurrency` at once when they use a
    sandbox environment: the replays wait on the network, one MCP session each (opened,
    reset, used, checked and closed by its replay), every client on one event loop. Without
    an environment the replays are CPU only and run one after another.

    For backends that need no database (the harness check's in-process recorded model):
    the replays run in worker threads."""
    if concurrency <= 1 or not any(run.agent.environment_url for run in runs):
        return [replay(run, config_version, gateway=gateway) for run in runs]

    async def replay_all() -> list[ReplayResult]:
        from anyio.from_thread import BlockingPortal

        semaphore = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool:
            async with BlockingPortal() as portal:

                async def one(run: Run) -> ReplayResult:
                    async with semaphore:
                        return await loop.run_in_executor(
                            pool,
                            functools.partial(
                                replay, run, config_version, gateway=gateway, portal=portal
                            ),
                        )

                results = list(await asyncio.gather(*(one(run) for run in runs)))
        return results

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay_all())
    # Called from async code (a running loop in this thread): run on a loop of our own.
    with ThreadPoolExecutor(max_workers=1) as runner:
        return runner.submit(asyncio.run, replay_all()).result()
