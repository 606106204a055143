"""Answers to POSTs by idempotency key, so a retried POST is applied at most once."""

from __future__ import annotations

from collections import OrderedDict

from greencpn.agent.errors import Refused


class IdempotencyStore:
    """Answers to POSTs by idempotency key, kept ``ttl_s`` seconds, at most ``max_entries``."""

    def __init__(self, ttl_s: float = 600.0, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, str, int, bytes]] = OrderedDict()

    def get(self, key: str, request_id: str, now_s: float) -> tuple[int, bytes] | None:
        item = self._items.get(key)
        if item is None or item[0] < now_s:
            return None
        if item[1] != request_id:
            raise Refused(
                "idempotency_conflict",
                "idempotency key reused for a different request",
                fix="use a fresh idempotency key for every new request",
            )
        return item[2], item[3]

    def put(self, key: str, request_id: str, status: int, body: bytes, now_s: float) -> None:
        self._items[key] = (now_s + self.ttl_s, request_id, status, body)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
