"""Retention: the `cleanup` use case, the cron entry point.

Three rules, applied in this order to the sessions the filters select:

1. TTL expiry: a session whose `expires_at` (`create --ttl`, `update --ttl`) has
   passed is DELETED. A TTL is a promise that the data goes away; archiving would keep
   it.
2. `delete_after` (config `[retention]` or `--delete-after`): sessions of any status
   idle (no message) for at least that long are deleted.
3. `archive_after`: active sessions idle for at least that long are archived.

A session that rule 1 or 2 deletes is not also counted by a later rule. Every change
happens in short transactions of at most BATCH sessions that re-select the sessions
under the write lock, so cleanup never holds up a concurrent send for long and never
removes a session that became active (a send marks its session active before calling
the provider) after cleanup first looked. Running it twice does nothing the second
time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sessctl import timeutil
from sessctl.errors import UsageError
from sessctl.models import SessionFilter
from sessctl.ops import PROGRESS_MIN_ITEMS, progress, wants_progress
from sessctl.service import App

BATCH = 100
RETENTION_KEYS = ("archive_after", "delete_after")
OFF = ("off", "never", "none")


@dataclass(frozen=True)
class Rule:
    seconds: int | None = None  # None: the rule is off
    text: str | None = None  # as written, for the report


@dataclass(frozen=True)
class Policy:
    archive_after: Rule = Rule()
    delete_after: Rule = Rule()


def _rule(value: Any, what: str) -> Rule:
    if value is None or value is False:
        return Rule()
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a duration such as \"30d\", or \"off\" (got {value!r})")
    if value.strip().lower() in OFF:
        return Rule()
    seconds = timeutil.parse_duration(value, what=what)
    if seconds <= 0:
        raise UsageError(f"{what} must be longer than 0 (use \"off\" to turn the rule off)")
    return Rule(seconds, value.strip())


def policy(retention: Mapping[str, Any], where: str, *, archive_after: str | None = None,
           delete_after: str | None = None) -> Policy:
    """The [retention] table of the config, with flags overriding it key by key."""
    unknown = sorted(set(retention) - set(RETENTION_KEYS))
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)} in [retention] (known: {', '.join(RETENTION_KEYS)})"
        )
    return Policy(
        archive_after=_rule(archive_after, "--archive-after") if archive_after is not None
        else _rule(retention.get("archive_after"), f"{where}: [retention] archive_after"),
        delete_after=_rule(delete_after, "--delete-after") if delete_after is not None
        else _rule(retention.get("delete_after"), f"{where}: [retention] delete_after"),
    )


@dataclass
class Phase:
    name: str  # "expired" | "deleted" | "archived"
    action: str  # "delete" | "archive"
    rule: str  # what selected them, for people
    enabled: bool = True
    ids: list[str] = field(default_factory=list)
    messages: int = 0


@dataclass
class Report:
    now: int
    dry_run: bool
    policy: Policy
    phases: list[Phase]
    vacuumed: bool = False
    checkpointed: bool = True

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    @property
    def changed(self) -> int:
        return sum(len(p.ids) for p in self.phases)


def _phases(pol: Policy, now: int) -> list[tuple[Phase, str, list[Any]]]:
    a, d = pol.archive_after, pol.delete_after
    return [
        (Phase("expired", "delete", "TTL passed (expires_at)"),
         "expires_at IS NOT NULL AND expires_at <= ?", [now]),
        (Phase("deleted", "delete", f"idle {d.text} (delete_after)" if d.seconds else "off (no delete_after)",
               enabled=d.seconds is not None),
         "updated_at < ?", [timeutil.ago(now, d.seconds or 0)]),
        (Phase("archived", "archive", f"idle {a.text} (archive_after)" if a.seconds else "off (no archive_after)",
               enabled=a.seconds is not None),
         "status = 'active' AND updated_at < ?", [timeutil.ago(now, a.seconds or 0)]),
    ]


def cleanup(app: App, f: SessionFilter, pol: Policy, *, dry_run: bool = False, vacuum: bool = False) -> Report:
    """Apply the policy to the sessions f selects. Exit status is the caller's: an
    empty report is success."""
    from sessctl.store import bulk

    now = app.now()
    plan = _phases(pol, now)
    report = Report(now, dry_run, pol, [p for p, _, _ in plan])
    store = app.store(create=False)
    if store is None:
        return report
    active = [(p, cond, params) for p, cond, params in plan if p.enabled]
    if dry_run:
        claimed: set[str] = set()
        for phase, cond, params in active:
            for a in bulk.preview(store, f, cond, params):
                if a.id not in claimed:
                    claimed.add(a.id)
                    phase.ids.append(a.id)
                    phase.messages += a.messages
        return report
    total = sum(bulk.count(store, f, cond, params) for _, cond, params in active) if wants_progress(
        app, PROGRESS_MIN_ITEMS) else 0
    with progress(app, total, "cleaning up") as step:
        for phase, cond, params in active:
            while True:
                batch = bulk.apply_batch(store, f, cond, params, phase.action, now, BATCH)
                if not batch:
                    break
                phase.ids += [a.id for a in batch]
                phase.messages += sum(a.messages for a in batch)
                step(len(batch))
    if vacuum and (report.phase("expired").ids or report.phase("deleted").ids):
        report.vacuumed = True
        report.checkpointed = bulk.vacuum(store)
    return report


def report_dict(r: Report) -> dict[str, Any]:
    """The `cleanup --format json` document (one line per run suits a log file)."""
    iso = timeutil.iso
    return {
        "now": iso(r.now),
        "dry_run": r.dry_run,
        "policy": {"ttl": "delete", "delete_after": r.policy.delete_after.text,
                   "archive_after": r.policy.archive_after.text},
        **{p.name: {"sessions": len(p.ids), "messages": p.messages, "ids": list(p.ids)} for p in r.phases},
        "vacuumed": r.vacuumed,
    }
