"""A nightly retention job: archive idle sessions, delete old ones, report in JSON.

What `sessctl cleanup` does from cron, as a program would run it (e.g. inside a
scheduler that already runs Python): TTLs that passed are deleted, sessions idle for
`--delete-after` deleted, those idle for `--archive-after` archived. Each step works
in short transactions, safe beside live traffic. Prints one JSON line (for logs).

    python examples/retention_job.py --db /tmp/chatbot.db --archive-after 30d --delete-after 365d
    python examples/retention_job.py --db /tmp/chatbot.db --dry-run
"""

from __future__ import annotations

import argparse
import json
import sys

import sessctl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database path or postgresql:// URL (default: sessctl's)")
    parser.add_argument("--archive-after", default="30d", help='idle time before archiving ("off" to skip)')
    parser.add_argument("--delete-after", default="365d", help='idle time before deleting ("off" to skip)')
    parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    args = parser.parse_args()

    try:
        with sessctl.open(args.db) as store:
            report = store.cleanup(archive_after=args.archive_after, delete_after=args.delete_after,
                                   dry_run=args.dry_run)
            report["remaining"] = store.stats()["sessions"]
    except sessctl.SessctlError as exc:
        # One line and the CLI's exit code, so a scheduler can tell a locked database (7)
        # from a bad argument (2).
        print(f"retention job failed: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
