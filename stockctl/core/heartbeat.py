"""A worker's heartbeat, one encoding: what ``stockctl worker`` writes every few seconds (under
``stockctl:heartbeat:{app_id}:{consumer}``, with a TTL) and what ``worker --check``,
``stockctl health``, ``diagnose`` and ``top`` read back. Pure standard library."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class InvalidHeartbeat(ValueError):
    """A heartbeat payload that is not one (not JSON, or a field of the wrong type)."""


@dataclass(frozen=True, slots=True)
class JobState:
    """One job kind of a worker (its threads together), in wall-clock seconds."""

    ok_at: float | None = None  # the last step that did not fail
    failing_since: float | None = None  # the first failure since then; None: not failing
    error: str | None = None  # that failure, one line


@dataclass(frozen=True, slots=True)
class Heartbeat:
    consumer: str
    pid: int
    host: str
    at: float  # when it was written (time.time())
    jobs: Mapping[str, int] = field(default_factory=dict)  # items done per job kind
    workers: int = 0  # job threads
    last_batch_seconds: float = 0.0  # the slowest job's last batch
    health: Mapping[str, JobState] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["jobs"], out["health"] = dict(self.jobs), {k: asdict(v) for k, v in self.health.items()}
        return out

    def age(self, now: float) -> float:
        return now - self.at

    @classmethod
    def decode(cls, raw: str | bytes) -> Heartbeat:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise InvalidHeartbeat("heartbeat is not a JSON object")
            health = {
                str(k): JobState(_num(v.get("ok_at")), _num(v.get("failing_since")), v.get("error"))
                for k, v in (d.get("health") or {}).items()
            }
            return cls(
                consumer=str(d.get("consumer", "")),
                pid=int(d.get("pid", 0)),
                host=str(d.get("host", "")),
                at=float(d.get("at") or 0),
                jobs={str(k): int(n) for k, n in (d.get("jobs") or {}).items()},
                workers=int(d.get("workers", 0)),
                last_batch_seconds=float(d.get("last_batch_seconds") or 0),
                health=health,
            )
        except InvalidHeartbeat:
            raise
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidHeartbeat(f"heartbeat is not readable: {exc}") from None


def decode_all(beats: Mapping[str, str]) -> dict[str, Heartbeat]:
    """The readable heartbeats by name; unreadable ones are left out (``assess`` reports them)."""
    out: dict[str, Heartbeat] = {}
    for name, raw in beats.items():
        try:
            out[name] = Heartbeat.decode(raw)
        except InvalidHeartbeat:
            continue
    return out


def _num(value: Any) -> float | None:
    return None if value is None else float(value)
