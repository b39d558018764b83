"""The delivery log of an event: where each of its deliveries stands, from stream records.

The router and the delivery workers publish small JSON records on ``log.<hash of the
event id>`` (stream ``DELIVERY_LOG``, see :func:`schemas.subjects.log_subject`):

* ``routed`` (router): the event was matched; ``jobs`` deliveries were queued;
* ``queued`` (a replayed dead letter, a hub notice), ``retrying`` (with the error and the
  delay), ``sent`` (with the provider's id), ``dead`` (with the reason): one per attempt,
  per delivery (``job_id``, ``channel``, ``recipient``, ``target``).

:func:`read_log` reads them back; :func:`summarise` folds them, in stream order, into one
line per delivery whose status is the latest record's; :func:`render` formats that for
``impactbus log``. A delivery the router queued but no worker has tried yet has no record
of its own: it is counted as "not attempted yet" from the ``routed`` record's ``jobs``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import NotFoundError
from schemas.subjects import log_subject
from services.bus import DELIVERY_LOG, Bus
from services.bus.streams import read_subject

Record = dict[str, Any]


async def read_log(bus: Bus, event_id: str) -> list[Record]:
    """Every log record of the event with id ``event_id``, oldest first."""
    records: list[Record] = []
    for _, _, data in await read_subject(bus, DELIVERY_LOG, log_subject(event_id)):
        with contextlib.suppress(ValueError):
            record = json.loads(data)
            if isinstance(record, dict):
                records.append(record)
    return records


@dataclass
class TargetLog:
    """Where one delivery (one target on one channel) stands."""

    job_id: str
    channel: str
    recipient: str
    target: str
    status: str
    attempts: int = 0
    first_at: str = ""
    last_at: str = ""
    error: str | None = None
    reason: str | None = None
    provider_id: str | None = None
    retry_in_s: float | None = None
    history: list[str] = field(default_factory=list)


@dataclass
class EventLog:
    """An event's routing and the state of each of its deliveries."""

    event_id: str
    routed_at: str | None = None
    jobs: int | None = None
    targets: list[TargetLog] = field(default_factory=list)

    @property
    def not_attempted(self) -> int:
        """Deliveries the router queued that no worker has reported on yet."""
        if self.jobs is None:
            return 0
        return max(0, self.jobs - len(self.targets))

    def counts(self) -> dict[str, int]:
        """How many deliveries are in each status."""
        out: dict[str, int] = {}
        for t in self.targets:
            out[t.status] = out.get(t.status, 0) + 1
        return out


def summarise(event_id: str, records: list[Record]) -> EventLog:
    """Fold an event's log records (oldest first) into its :class:`EventLog` (pure)."""
    log = EventLog(event_id)
    by_job: dict[str, TargetLog] = {}
    for r in records:
        status = str(r.get("status") or "")
        at = str(r.get("at") or "")
        if status == "routed":
            log.routed_at = log.routed_at or at
            if isinstance(r.get("jobs"), int):
                log.jobs = max(log.jobs or 0, int(r["jobs"]))
            continue
        job_id = r.get("job_id")
        if not isinstance(job_id, str) or not status:
            continue
        t = by_job.get(job_id)
        if t is None:
            t = TargetLog(
                job_id=job_id,
                channel=str(r.get("channel") or ""),
                recipient=str(r.get("recipient") or ""),
                target=str(r.get("target") or ""),
                status=status,
                first_at=at,
            )
            by_job[job_id] = t
        t.status, t.last_at = status, at
        attempt = r.get("attempt")
        if isinstance(attempt, int):
            t.attempts = max(t.attempts, attempt) if status != "queued" else t.attempts
        t.error = _opt(r.get("error")) if status in ("retrying", "dead") else None
        t.reason = _opt(r.get("reason")) if status == "dead" else None
        t.provider_id = _opt(r.get("provider_id")) or t.provider_id
        retry = r.get("retry_in_s")
        t.retry_in_s = (
            float(retry) if status == "retrying" and isinstance(retry, int | float) else None
        )
        t.history.append(f"{_clock(at)} {status}")
    log.targets = sorted(by_job.values(), key=lambda t: (t.channel, t.recipient, t.target))
    return log


async def event_log(bus: Bus, event_id: str) -> EventLog:
    """The delivery log of one event.

    Raises:
        NotFoundError: nothing was logged for that id.
    """
    records = await read_log(bus, event_id)
    if not records:
        raise NotFoundError(
            f"no delivery log for event {event_id!r}: check the id (`impactbus tail --last 20`);"
            " logs are kept 30 days"
        )
    return summarise(event_id, records)


def render(log: EventLog) -> list[str]:
    """The lines ``impactbus log`` prints (pure)."""
    head = f"event {log.event_id}"
    if log.routed_at:
        jobs = f"{log.jobs} deliver{'y' if log.jobs == 1 else 'ies'}"
        head += f": routed {_stamp(log.routed_at)} to {jobs}"
    else:
        head += ": not routed (yet)"
    lines = [head]
    width = max((len(t.target) for t in log.targets), default=0)
    for t in log.targets:
        detail = [f"attempts {t.attempts}" if t.attempts != 1 else "1 attempt"]
        if t.status == "sent" and t.provider_id:
            detail.append(t.provider_id)
        if t.status == "retrying" and t.retry_in_s is not None:
            detail.append(f"next in {t.retry_in_s:g}s")
        if t.status == "dead" and t.reason:
            detail.append(f"reason {t.reason}")
        if t.error:
            detail.append(t.error[:160])
        when = (
            _clock(t.first_at)
            if t.first_at == t.last_at
            else f"{_clock(t.first_at)}..{_clock(t.last_at)}"
        )
        lines.append(
            f"  {t.status:<9} {t.channel:<8} {t.recipient:<16} {t.target:<{width}}  {when}  "
            + "  ".join(detail)
        )
    if log.not_attempted:
        lines.append(
            f"  {log.not_attempted} more queued: not attempted yet (or collected for a digest)"
        )
    counts = log.counts()
    if counts:
        lines.append("  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return lines


def _opt(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _clock(at: str) -> str:
    """``HH:MM:SS.mmm`` of an ISO time (UTC as recorded)."""
    _, _, rest = at.partition("T")
    return rest[:12] if rest else at


def _stamp(at: str) -> str:
    return at[:19].replace("T", " ") + "Z" if at else ""
