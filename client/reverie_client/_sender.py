"""The background sender: a bounded queue drained by one daemon thread, in batches.

The caller's thread only enqueues (never blocks, never raises). Failed sends are retried with
backoff while Reverie is unreachable or answers 429/5xx, then dropped with a warning.
"""

import atexit
import logging
import queue
import threading
import time
import warnings
from typing import Any

import httpx2

logger = logging.getLogger("reverie_client")
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class Sender:
    def __init__(
        self,
        *,
        http: httpx2.Client,
        max_queue: int,
        batch_size: int,
        flush_interval: float,
        max_retries: int,
        retry_backoff: float,
    ) -> None:
        self.http = http
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=max_queue)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.sent = 0
        self.dropped = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="reverie-sender", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, kind: str, payload: dict[str, Any]) -> None:
        """Enqueue a run or a feedback item; a full queue drops it with a warning."""
        try:
            self.queue.put_nowait((kind, payload))
        except queue.Full:
            self._drop(1, "the capture queue is full")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything enqueued so far was sent or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self._stopping.is_set():
            return
        self.flush(timeout)
        self._stopping.set()
        self._thread.join(timeout=1.0)

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        message = f"reverie-client dropped {count} item(s): {why}"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            feedback = None
            # Batch consecutive runs; a feedback item goes after the runs queued before it.
            while first[0] == "run" and len(batch) < self.batch_size:
                try:
                    nxt = self.queue.get(timeout=self.flush_interval if len(batch) == 1 else 0)
                except queue.Empty:
                    break
                if nxt[0] != "run":
                    feedback = nxt
                    break
                batch.append(nxt)
            for group in [batch] if feedback is None else [batch, [feedback]]:
                try:
                    if group[0][0] == "run":
                        self._send_runs(group)
                    else:
                        self._send("/api/v1/feedback", group[0][1], count=1)
                except Exception:  # the sender must outlive any bug
                    logger.exception("reverie-client: unexpected error while sending")
                finally:
                    for _ in group:
                        self.queue.task_done()

    def _send_runs(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        self._send("/api/v1/runs", {"runs": [payload for _, payload in items]}, count=len(items))

    def _send(self, path: str, body: dict[str, Any], *, count: int) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                response = self.http.post(path, json=body)
            except httpx2.HTTPError as exc:
                reason = f"Reverie unreachable ({exc.__class__.__name__})"
            else:
                if response.status_code < 300:
                    self.sent += count
                    return
                if response.status_code not in RETRYABLE:
                    self._drop(
                        count, f"Reverie refused them: {response.status_code} {response.text[:500]}"
                    )
                    return
                reason = f"Reverie answered {response.status_code}"
            if attempt < self.max_retries and not self._stopping.is_set():
                time.sleep(min(self.retry_backoff * 2**attempt, 10.0))
        self._drop(count, f"{reason} after {self.max_retries + 1} attempts")
