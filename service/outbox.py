"""Operator actions on the outbox: set a stuck result aside, and put it back.

The outbox is FIFO per destination (service.export): a result that a PACS
refuses for good (a status it will never change its mind about, a file it
cannot take) holds back every later result for that destination.  Parking it
lets the rest go on without losing it: a parked row is never tried, never
deleted by retention, keeps its job out of ``delivered``, and its file stays
downloadable over REST.  Requeueing makes it pending and due again, at its
old place in the order (its id), once the destination has been fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.models import Delivery, DeliveryState, utcnow
from service.db.session import Database


class OutboxError(Exception):
    """An action that does not apply: ``status`` is the HTTP code that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeliveryView:
    """One outbox row as the API shows it."""

    id: int
    job_id: str
    destination: str
    kind: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryView:
        return cls(
            id=d.id,
            job_id=d.job_id,
            destination=d.destination,
            kind=d.kind,
            state=d.state.value,
            attempts=d.attempts,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            delivered_at=d.delivered_at,
        )

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "destination": self.destination,
            "kind": self.kind,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
        }


def list_deliveries(
    db: Database,
    *,
    destination: str | None = None,
    state: DeliveryState | None = None,
    limit: int = 100,
) -> list[DeliveryView]:
    """Outbox rows in sending order (oldest first): the head of a destination's queue first."""
    q = select(Delivery).order_by(Delivery.id).limit(limit)
    if destination:
        q = q.where(Delivery.destination == destination)
    if state is not None:
        q = q.where(Delivery.state == state)
    with db.session() as s:
        return [DeliveryView.of(d) for d in s.scalars(q)]


def park(db: Database, delivery_id: int) -> DeliveryView:
    """Set a pending row aside; the rows it held back become due at once."""
    now = utcnow()
    with db.session() as s:
        d = _locked(s, delivery_id)
        if d.state != DeliveryState.PENDING:
            raise OutboxError(409, f"delivery {delivery_id} is {d.state.value}, not pending")
        d.state = DeliveryState.PARKED
        # the rows behind it waited out its back-off (service.export): due now, in one UPDATE
        s.execute(
            update(Delivery)
            .where(
                Delivery.destination == d.destination,
                Delivery.state == DeliveryState.PENDING,
                Delivery.id > d.id,
                Delivery.next_attempt_at > now,
            )
            .values(next_attempt_at=now)
        )
        return DeliveryView.of(d)


def requeue(db: Database, delivery_id: int) -> DeliveryView:
    """Make a parked row pending and due now, at its old place in the FIFO order."""
    with db.session() as s:
        d = _locked(s, delivery_id)
        if d.state != DeliveryState.PARKED:
            raise OutboxError(409, f"delivery {delivery_id} is {d.state.value}, not parked")
        d.state = DeliveryState.PENDING
        d.next_attempt_at = utcnow()
        return DeliveryView.of(d)


def _locked(s: Session, delivery_id: int) -> Delivery:
    d = s.get(Delivery, delivery_id, with_for_update=True)
    if d is None:
        raise OutboxError(404, f"no delivery {delivery_id}")
    return d
