"""The CI recipe with the Python client: post a changed prompt (or memory) file as a proposal,
wait for its replay verdict, and fail the job on regressions.

    REVERIE_URL=https://reverie.example.com REVERIE_API_KEY=rv_… \\
      python -m reverie_client.ci refunds-desk prompts/refunds.md --title "PR #12"

Exit codes (as client/reverie-propose.sh): 0 no regressions, 1 regressions or a `regresses`
verdict, 2 usage or API error, 3 timed out waiting for the replays.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reverie_client._client import Reverie, ReverieError, ReverieTimeout

OK, REGRESSED, ERROR, TIMED_OUT = 0, 1, 2, 3


def regressed(proposal: dict[str, Any], *, max_regressions: int = 0) -> bool:
    """Whether a judged proposal should fail the job: a `regresses` verdict or too many
    regressed runs."""
    regressions = (proposal.get("overall") or {}).get("regressions") or 0
    return proposal.get("verdict") == "regresses" or regressions > max_regressions


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reverie_client.ci",
        description="Propose a changed prompt file to Reverie and fail on regressions.",
    )
    p.add_argument("agent", help="the agent's slug")
    p.add_argument("file", type=Path, help="the changed prompt or memory document")
    p.add_argument("--title", help="default: 'Change to <file> from CI'")
    p.add_argument("--rationale", default=os.environ.get("REVERIE_RATIONALE", ""))
    p.add_argument(
        "--document",
        default=os.environ.get("REVERIE_DOCUMENT", "system_prompt"),
        help="system_prompt (default) or a memory document path",
    )
    p.add_argument("--run-set", type=int, help="judge it on this run set (id)")
    p.add_argument(
        "--max-regressions", type=int, default=int(os.environ.get("REVERIE_MAX_REGRESSIONS", "0"))
    )
    p.add_argument(
        "--timeout", type=float, default=float(os.environ.get("REVERIE_TIMEOUT", "1800"))
    )
    p.add_argument("--poll", type=float, default=float(os.environ.get("REVERIE_POLL", "10")))
    p.add_argument("--url", default=os.environ.get("REVERIE_URL"), help="or REVERIE_URL")
    p.add_argument(
        "--api-key", default=os.environ.get("REVERIE_API_KEY"), help="or REVERIE_API_KEY"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.url or not args.api_key:
        print("reverie: set REVERIE_URL and REVERIE_API_KEY (an admin-scope key)", file=sys.stderr)
        return ERROR
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"reverie: cannot read {args.file}: {exc}", file=sys.stderr)
        return ERROR
    reverie = Reverie(args.url, args.api_key)
    try:
        created = reverie.propose(
            args.agent,
            title=args.title or f"Change to {args.file} from CI",
            rationale=args.rationale,
            documents={args.document: text},
            runs={"run_set": args.run_set} if args.run_set is not None else None,
        )
        print(f"reverie: proposal #{created['id']} created; waiting for its replays")
        proposal = reverie.wait_for_verdict(created["id"], timeout=args.timeout, poll=args.poll)
    except ReverieTimeout as exc:
        print(f"reverie: timed out: {exc}", file=sys.stderr)
        return TIMED_OUT
    except ReverieError as exc:
        print(f"reverie: {exc}", file=sys.stderr)
        return ERROR
    finally:
        reverie.close(timeout=0)
    overall = proposal.get("overall") or {}
    print(
        f"reverie: proposal #{proposal['id']} is {proposal['status']}; verdict "
        f"{proposal.get('verdict') or 'none'}; {overall.get('fixes') or 0} fixed, "
        f"{overall.get('regressions') or 0} regressed"
    )
    print(f"reverie: {args.url.rstrip('/')}/proposals/{proposal['id']}/")
    return REGRESSED if regressed(proposal, max_regressions=args.max_regressions) else OK


if __name__ == "__main__":
    sys.exit(main())
