#!/usr/bin/env bash
# Post a changed prompt file as a Reverie proposal, wait for its replay verdict, and fail the
# CI job on regressions. Needs curl and python3 (for JSON); nothing else.
#
#   REVERIE_URL=https://reverie.example.com REVERIE_API_KEY=rv_… \
#     client/reverie-propose.sh <agent-slug> <prompt-file> [title]
#
# Optional: REVERIE_DOCUMENT (default system_prompt; or a memory document path),
# REVERIE_RATIONALE, REVERIE_TIMEOUT seconds (default 1800), REVERIE_POLL seconds (default 10),
# REVERIE_MAX_REGRESSIONS (default 0).
# Exit codes: 0 no regressions, 1 regressions or a "regresses" verdict, 2 usage or API error,
# 3 timed out waiting for the replays.
set -euo pipefail

agent="${1:?usage: reverie-propose.sh <agent-slug> <prompt-file> [title]}"
file="${2:?usage: reverie-propose.sh <agent-slug> <prompt-file> [title]}"
title="${3:-Change to ${file} from CI}"
url="${REVERIE_URL:?set REVERIE_URL}"
key="${REVERIE_API_KEY:?set REVERIE_API_KEY}"
document="${REVERIE_DOCUMENT:-system_prompt}"
timeout="${REVERIE_TIMEOUT:-1800}"
poll="${REVERIE_POLL:-10}"
max_regressions="${REVERIE_MAX_REGRESSIONS:-0}"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

body=$(python3 - "$file" "$title" "$document" "${REVERIE_RATIONALE:-}" <<'PY'
import json, pathlib, sys
path, title, document, rationale = sys.argv[1:5]
text = pathlib.Path(path).read_text(encoding="utf-8")
print(json.dumps({"title": title, "rationale": rationale, "documents": {document: text}}))
PY
)

response=$(curl -sS -w '\n%{http_code}' -X POST "$url/api/v1/agents/$agent/proposals" \
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" --data-binary "$body")
code="${response##*$'\n'}"
response="${response%$'\n'*}"
if [ "$code" != "201" ]; then
  echo "reverie: could not create the proposal (HTTP $code): $response" >&2
  exit 2
fi
id=$(echo "$response" | json 'd["id"]')
echo "reverie: proposal #$id created; waiting for its replays"

deadline=$(( $(date +%s) + timeout ))
while :; do
  proposal=$(curl -sS -f -H "Authorization: Bearer $key" "$url/api/v1/proposals/$id") || exit 2
  status=$(echo "$proposal" | json 'd["status"]')
  case "$status" in drafted|replaying) ;; *) break ;; esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "reverie: timed out after ${timeout}s; proposal #$id is still $status" >&2
    exit 3
  fi
  sleep "$poll"
done

verdict=$(echo "$proposal" | json 'd["verdict"]')
regressions=$(echo "$proposal" | json '(d["overall"] or {}).get("regressions") or 0')
fixes=$(echo "$proposal" | json '(d["overall"] or {}).get("fixes") or 0')
echo "reverie: proposal #$id is $status; verdict ${verdict:-none}; $fixes fixed, $regressions regressed"
echo "reverie: $url/proposals/$id/"
if [ "$verdict" = "regresses" ] || [ "$regressions" -gt "$max_regressions" ]; then
  exit 1
fi
