"""`Reverie`: runs (one per call, or grouped with `run()`), feedback, the routed config, and
proposals (`propose()`, `wait_for_verdict()`) for CI."""

import contextvars
import logging
import threading
import time
import uuid
from typing import Any, Self

import httpx2

from reverie_client._sender import Sender

logger = logging.getLogger("reverie_client")
_current_run: contextvars.ContextVar["Run | None"] = contextvars.ContextVar(
    "reverie_run", default=None
)
# agent slug → the config version this context was routed to by `Reverie.config()`.
_routed: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "reverie_routed", default=None
)
_default: "Reverie | None" = None


class ReverieError(Exception):
    """Reverie refused or could not answer (`config()` with nothing cached, a proposal call)."""


class ReverieTimeout(ReverieError):
    """`wait_for_verdict()` gave up: the proposal's replays are still running."""

    def __init__(self, message: str, proposal: dict[str, Any]) -> None:
        super().__init__(message)
        self.proposal = proposal


# Proposal statuses that mean "not judged yet".
PENDING_STATUSES = ("drafted", "replaying")


def default_reverie() -> "Reverie":
    if _default is None:
        raise ReverieError("create a Reverie(base_url, api_key) first, or pass reverie=")
    return _default


def to_json(value: Any) -> Any:
    """SDK models and containers as plain JSON data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class Run:
    """The calls of one agent loop, sent as one run when the `with` block ends."""

    def __init__(
        self,
        reverie: "Reverie",
        agent: str,
        *,
        external_id: str | None,
        user_brief: str | None,
        config_version: int | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.reverie = reverie
        self.agent = agent
        self.external_id = external_id or f"run-{uuid.uuid4().hex}"
        self.user_brief = user_brief
        self.config_version = config_version
        self.tags = list(tags or [])
        self.metadata = dict(metadata or {})
        self.status = "unknown"
        self.reason = ""
        self.score: float | None = None
        self.exchanges: list[tuple[dict[str, Any], Any, float]] = []
        self._lock = threading.Lock()
        self._token: contextvars.Token[Run | None] | None = None
        self._started = time.time()

    def succeed(self, score: float | None = None) -> None:
        self.status, self.score = "success", score

    def fail(self, reason: str = "", score: float | None = None) -> None:
        self.status, self.reason, self.score = "failure", reason, score

    def add(self, request: dict[str, Any], response: Any, latency_ms: float) -> None:
        with self._lock:
            self.exchanges.append((request, response, latency_ms))

    def __enter__(self) -> Self:
        self._token = _current_run.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            _current_run.reset(self._token)
        if exc is not None and self.status == "unknown":
            self.status, self.reason = "error", f"{type(exc).__name__}: {exc}"[:2000]
        self.reverie._submit_run(self)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class Reverie:
    """A connection to one Reverie server with one workspace API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_retries: int = 6,
        retry_backoff: float = 0.5,
        timeout: float = 10.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        global _default
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "reverie-client/0.1"}
        self._http = httpx2.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._sender = Sender(
            http=self._http,
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
        )
        self._configs: dict[tuple[str, str | None], tuple[str, dict[str, Any]]] = {}
        self._config_lock = threading.Lock()
        _default = self  # the latest connection is the one wrap_anthropic() uses by default

    # -- capture -------------------------------------------------------------------------

    def run(
        self,
        agent: str,
        *,
        external_id: str | None = None,
        user_brief: str | None = None,
        config_version: int | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """Group the wrapped calls made inside the `with` block into one run."""
        return Run(
            self,
            agent,
            external_id=external_id,
            user_brief=user_brief,
            config_version=config_version,
            tags=tags,
            metadata=metadata,
        )

    def record_call(
        self, *, agent: str, request: dict[str, Any], response: Any, latency_ms: float
    ) -> None:
        """One Messages API call: into the current run, else a run of its own. Never raises."""
        try:
            run = _current_run.get()
            if run is not None and run.reverie is self:
                run.add(request, response, latency_ms)
                return
            single = self.run(agent, external_id=f"call-{uuid.uuid4().hex}")
            single.add(request, response, latency_ms)
            self._submit_run(single)
        except Exception:
            logger.exception("reverie-client: could not record a call")

    def _submit_run(self, run: Run) -> None:
        try:
            if not run.exchanges:
                return  # nothing was called: nothing to learn from
            version = run.config_version
            if version is None:
                version = (_routed.get() or {}).get(run.agent)
            exchanges = []
            last = len(run.exchanges) - 1
            for index, (request, response, _) in enumerate(run.exchanges):
                body = to_json(request) if index == last else {"model": request.get("model")}
                exchanges.append({"request": body, "response": to_json(response)})
            payload: dict[str, Any] = {
                "agent": run.agent,
                "external_id": run.external_id,
                "format": "anthropic_exchange",
                "exchanges": exchanges,
                "status": run.status,
                "latency_ms": int(sum(latency for _, _, latency in run.exchanges)),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run._started)),
                "tags": ["reverie-client", *run.tags],
                "metadata": run.metadata
                | ({"user_brief": run.user_brief} if run.user_brief else {}),
            }
            if run.reason:
                payload["outcome_reason"] = run.reason
            if run.score is not None:
                payload["score"] = run.score
            if version is not None:
                payload["config_version"] = version
            self._sender.put("run", payload)
        except Exception:
            logger.exception("reverie-client: could not queue a run")

    def capture(self, item: dict[str, Any]) -> None:
        """Queue a ready-made run item (any `POST /api/v1/runs` format). Never raises."""
        self._sender.put("run", item)

    def feedback(
        self,
        *,
        rating: str,
        agent: str | None = None,
        external_id: str | None = None,
        run_id: int | None = None,
        score: float | None = None,
        comment: str = "",
    ) -> None:
        """Rate a run (queued behind the runs sent before it, so it finds them)."""
        body: dict[str, Any] = {"rating": rating, "comment": comment}
        if run_id is not None:
            body["run_id"] = run_id
        else:
            body["agent"], body["external_id"] = agent, external_id
        if score is not None:
            body["score"] = score
        self._sender.put("feedback", body)

    # -- routed config --------------------------------------------------------------------

    def config(self, agent: str, *, key: str | None = None) -> dict[str, Any]:
        """The version this key should run (stable or canary), revalidated with its ETag.

        Runs captured afterwards in this context for `agent` are tagged with that version.
        When Reverie is unreachable the last answer for (agent, key) is served.
        """
        cache_key = (agent, key)
        with self._config_lock:
            cached = self._configs.get(cache_key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        params = {"key": key} if key is not None else {}
        try:
            response = self._http.get(
                f"/api/v1/agents/{agent}/config", params=params, headers=headers
            )
        except httpx2.HTTPError as exc:
            if cached is None:
                raise ReverieError(f"Reverie unreachable: {exc}") from exc
            logger.warning("reverie-client: serving the cached config of %s (%s)", agent, exc)
            answer = cached[1]
        else:
            if response.status_code == 304 and cached is not None:
                answer = cached[1]
            elif response.status_code == 200:
                answer = response.json()
                with self._config_lock:
                    self._configs[cache_key] = (response.headers.get("ETag", ""), answer)
            else:
                raise ReverieError(
                    f"config for {agent!r}: {response.status_code} {response.text[:300]}"
                )
        routed = dict(_routed.get() or {})
        routed[agent] = answer["version"]
        _routed.set(routed)
        return answer

    # -- proposals (CI) -------------------------------------------------------------------

    def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            raise ReverieError(f"Reverie unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                detail = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                detail = response.text[:300]
            raise ReverieError(f"{method} {path}: {response.status_code} {detail}")
        return response.json()

    def propose(
        self,
        agent: str,
        *,
        title: str,
        documents: dict[str, str | None] | None = None,
        edits: list[dict[str, str]] | None = None,
        rationale: str = "",
        runs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Propose a change by hand (needs an admin-scope key created by a member).

        `documents` maps `system_prompt` or a memory path to its new text; `edits` are
        `{document, patch}` unified diffs against the stable version; `runs` picks the runs
        that judge it (`{"run_set": id}`, `{"run_ids": [...]}`, a failure filter; default:
        the unstudied failures). Returns the proposal, replaying.
        """
        body: dict[str, Any] = {"title": title, "rationale": rationale}
        if documents is not None:
            body["documents"] = documents
        if edits is not None:
            body["edits"] = edits
        if runs is not None:
            body["runs"] = runs
        return self._api("POST", f"/api/v1/agents/{agent}/proposals", json=body)

    def proposal(self, proposal_id: int) -> dict[str, Any]:
        """A proposal with its documents, diff, verdict, statistics and replays."""
        return self._api("GET", f"/api/v1/proposals/{proposal_id}")

    def wait_for_verdict(
        self,
        proposal_id: int,
        *,
        timeout: float = 1800.0,
        poll: float = 10.0,
        sleep: Any = time.sleep,
        clock: Any = time.monotonic,
    ) -> dict[str, Any]:
        """Poll the proposal until its replays are done; returns it with `verdict` and
        `overall` (fixes, regressions). Raises ReverieTimeout after `timeout` seconds."""
        deadline = clock() + timeout
        while True:
            proposal = self.proposal(proposal_id)
            if proposal.get("status") not in PENDING_STATUSES:
                return proposal
            if clock() >= deadline:
                raise ReverieTimeout(
                    f"proposal #{proposal_id} is still {proposal.get('status')} after {timeout:g}s",
                    proposal,
                )
            sleep(poll)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._sender.dropped

    @property
    def sent(self) -> int:
        return self._sender.sent

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued run and feedback item was sent (or dropped)."""
        return self._sender.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to `timeout` seconds), then stop the sender."""
        global _default
        self._sender.close(timeout)
        self._http.close()
        if _default is self:
            _default = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wrap_anthropic(self, client: Any, *, agent: str) -> Any:
        from reverie_client._anthropic import wrap_anthropic

        return wrap_anthropic(client, agent=agent, reverie=self)
