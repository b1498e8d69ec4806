#!/usr/bin/env bash
# Bounded schemathesis run against a live dev server: every operation of /api/schema/ with
# generated (valid and invalid) input; exits non-zero on any 5xx, response-schema violation,
# undocumented status code, or a request outside the schema that is accepted (a constraint the
# schema does not state). Not checked: positive_data_acceptance, since a schema cannot express
# every business rule (an unknown agent slug is a valid string and a correct 400).
# Own throwaway SQLite database, simulated model, eager tasks; SERVER_LOG=path keeps the log.
#   bash tests/fuzz/schemathesis_run.sh            (PORT=18400 MAX_EXAMPLES=25 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PORT=${PORT:-18400}
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
WORK=$(mktemp -d)
# Embedded mode (no DATABASE_URL): a SQLite file in the throwaway var directory.
export REVERIE_VAR_DIR="$WORK"
unset DATABASE_URL REDIS_URL ANTHROPIC_API_KEY ANTHROPIC_BASE_URL
export REVERIE_LOG_LEVEL=ERROR
# The fuzz checks the schema, not the per-key rate limits (tests/agents/test_rate_limits.py).
export REVERIE_API_RATE_LIMIT=off REVERIE_CONFIG_RATE_LIMIT=off
# The Managed Agents webhook is live (a secret is set), so it answers 401 to unsigned posts.
export REVERIE_MANAGED_WEBHOOK_SECRET="whsec_$(printf 'fuzz-secret-0123456789' | base64)"

$PY manage.py migrate --no-input -v 0
# One agent (slug "support") and one of each object with id 1 (a cycle, a proposal with its
# experiment and replays, a run), so path parameters reach the views' logic instead of 404s
# (tests/fuzz/schemathesis.toml fixes them). An admin key: every operation is allowed.
KEY=$($PY manage.py shell -v 0 -c "
from agents import services
from agents.models import ApiKey
from tests.factories import AgentFactory, ConfigVersionFactory, WorkspaceFactory, reviewable_proposal
ws = WorkspaceFactory(name='Fuzz', slug='fuzz')
agent = AgentFactory(workspace=ws, slug='support', name='Support')
agent.stable_version = ConfigVersionFactory(agent=agent, number=1)
agent.save(update_fields=['stable_version'])
reviewable_proposal(agent=agent)
print(services.create_api_key(workspace=ws, name='fuzz', scope=ApiKey.Scope.ADMIN)[1])
")

$PY manage.py runserver "127.0.0.1:$PORT" --noreload >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 240); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/api/schema/" && break
  sleep 0.5
done

status=0
timeout "${TIMEOUT:-170}" "$(dirname "$PY")/schemathesis" --config-file tests/fuzz/schemathesis.toml run "http://127.0.0.1:$PORT/api/schema/" \
  --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method \
  --max-examples "$MAX_EXAMPLES" \
  --seed 10 \
  --generation-deterministic \
  --phases "${PHASES:-examples,coverage,fuzzing}" \
  --workers 2 \
  --request-timeout 20 \
  --suppress-health-check all \
  --no-color "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed (exit $status); server log: last lines follow" >&2
  tail -n 40 "$WORK/server.log" >&2 || true
fi
if [ -n "${SERVER_LOG:-}" ]; then cp "$WORK/server.log" "$SERVER_LOG"; fi
exit "$status"
