"""Lease claims: who is running a run, so that each run starts once among all submitters.

``runs/<run_id>/claim.json`` is created conditionally; its holder renews it while the run
lives and deletes it after ``run.json`` is written. A claim not renewed for its lease is
stale and may be taken over; of all who try, exactly one wins (see :meth:`_take_over`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable

from ..errors import NotFound, UsageError
from ..schema.record import now_iso
from .interface import Store
from .jsonio import dump_json

CLAIM = "claim.json"
STALE = "claim.stale-"  # + 16 hex of the stale claim's bytes


class Claims:
    """The claim objects of runs in a store. ``run_key(run_id, name)`` places them."""

    def __init__(
        self, store: Store, run_key: Callable[[str, str], str], is_complete: Callable[[str], bool]
    ) -> None:
        self.store = store
        self._key = run_key
        self._is_complete = is_complete

    def _body(self, run_id: str, owner: str, lease_s: float) -> bytes:
        claim = {
            "run_id": run_id,
            "owner": owner,
            "claimed_at": now_iso(),
            "lease_s": lease_s,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "nonce": uuid.uuid4().hex,  # no two claims have the same bytes
        }
        return dump_json(claim)

    @staticmethod
    def _owner_of(data: bytes) -> str | None:
        try:
            claim = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        owner = claim.get("owner") if isinstance(claim, dict) else None
        return owner if isinstance(owner, str) else None

    def claim(self, run_id: str, owner: str, lease_s: float = 3600) -> bool:
        """Take the run's claim: True if ``owner`` now holds the run.

        False if the run is complete or someone else holds a live claim. Calling it again
        as the holder renews the lease (a heartbeat). A claim not renewed for ``lease_s``
        is stale: of all who try to take it over, exactly one wins.
        """
        key = self._key(run_id, CLAIM)
        if not owner:
            raise UsageError("a claim needs a non-empty owner")
        if self._is_complete(run_id):
            return False
        for _ in range(3):  # a claim released while we looked at it: start over
            body = self._body(run_id, owner, lease_s)
            if self.store.create(key, body):
                if self._is_complete(run_id):  # finished by someone between our two steps
                    self.store.delete(key)
                    return False
                return True
            try:
                current = self.store.get(key)
            except NotFound:
                continue
            if self._owner_of(current) == owner:
                self.store.put(key, body)
                return True
            age = self.store.age(key)
            if age is None:
                continue
            if age <= lease_s:
                return False
            return self._take_over(run_id, key, current, body)
        return False

    def _take_over(self, run_id: str, key: str, stale: bytes, body: bytes) -> bool:
        # Deleting and re-creating the claim would let two takers both win (A deletes,
        # A creates, B deletes A's claim, B creates). Instead the takers race to create a
        # marker named after the stale claim's bytes; only its winner replaces the claim.
        marker = self._key(run_id, STALE + hashlib.sha256(stale).hexdigest()[:16])
        if not self.store.create(marker, body):
            return False
        if self._is_complete(run_id):
            return False
        try:
            now = self.store.get(key)
        except NotFound:
            now = None
        if now is not None and now != stale:  # renewed by its holder after all
            return False
        self.store.put(key, body)
        return True

    def is_live(self, run_id: str, lease_s: float) -> bool:
        """Someone holds the run: a claim renewed within ``lease_s`` seconds."""
        age = self.store.age(self._key(run_id, CLAIM))
        return age is not None and age <= lease_s

    def is_stale(self, run_id: str, lease_s: float) -> bool:
        """No live claim: none at all, or one not renewed for ``lease_s`` seconds."""
        return not self.is_live(run_id, lease_s)

    def holder(self, run_id: str) -> str | None:
        """The owner of the run's claim, None when there is none (or it is unreadable)."""
        try:
            return self._owner_of(self.store.get(self._key(run_id, CLAIM)))
        except NotFound:
            return None

    def release(self, run_id: str, owner: str | None = None) -> bool:
        """Drop the claim (and the takeover markers of earlier, stale claims); False if
        there was none to drop.

        With ``owner``, only a claim that ``owner`` still holds: a holder whose run was
        taken over (it was slower than the lease) must not delete its successor's live
        claim. A store has no conditional delete, so the owner is compared just before
        the delete; a takeover fits between the two only if this holder was already past
        its lease, which its renewals until ``run.json`` prevent.
        """
        key = self._key(run_id, CLAIM)
        if owner is not None and self.holder(run_id) != owner:
            return False
        self.store.delete(key)
        for stale in self.store.list(self._key(run_id, STALE)):
            self.store.delete(stale)
        return True

    @staticmethod
    def is_claim_file(name: str) -> bool:
        """A name in a run's directory that belongs to the claim machinery."""
        return name == CLAIM or name.startswith(STALE)
