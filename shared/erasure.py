"""Erasure tombstones: what is kept of an erased person, and only that. Plain Python, no I/O.

A service that erased someone keeps a digest of their (source, external_id), never the id
itself, so an event naming them that arrives late (an interest published before the erasure, a
proposal already relayed) or a link of theirs clicked later is recognised and does nothing
instead of bringing them back.

The digest is HMAC-SHA256 under the server's `ROAC_ERASURE_KEY`: external ids are often
guessable (`42`, an email address), and a plain hash of a guessable id can be reversed by
hashing candidates; without the key nobody holding a database copy can test whether a given
person was erased. Tombstones written before the key existed are plain SHA-256 of the same
input (`legacy_digest`); a migration cannot re-key them (it would need the ids), so lookups
also try the legacy digest, and a legacy row is replaced by a keyed one when that person is
erased again. `ErasureDigests(None)` (no key: tools and tests that construct a store directly;
the services refuse to start without a key) writes legacy digests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

# What replaces a person's identifiers and names in rows that must stay (counted history).
ERASED = "erased"

_DOMAIN = b"roac-erasure-v1."


def _identity(source: str, external_id: str) -> bytes:
    return f"{source}\x00{external_id}".encode()


def legacy_digest(source: str, external_id: str) -> bytes:
    """The tombstone key of one identity before ROAC_ERASURE_KEY: SHA-256, 32 bytes."""
    return hashlib.sha256(_identity(source, external_id)).digest()


def erasure_digest(source: str, external_id: str, key: bytes | None = None) -> bytes:
    """The tombstone key of one identity: 32 bytes, nothing readable. HMAC-SHA256 under `key`
    (ROAC_ERASURE_KEY); the legacy plain SHA-256 without one."""
    if key is None:
        return legacy_digest(source, external_id)
    return hmac.new(key, _DOMAIN + _identity(source, external_id), hashlib.sha256).digest()


@dataclass(frozen=True)
class ErasureDigests:
    """Digests under one server key (or none): what to store, and what to look up."""

    key: bytes | None

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def digest(self, source: str, external_id: str) -> bytes:
        """What a new tombstone stores."""
        return erasure_digest(source, external_id, self.key)

    def lookups(self, refs: Iterable[tuple[str, str]]) -> dict[bytes, tuple[str, str]]:
        """Every digest that marks one of `refs` as erased (the keyed one and the legacy one),
        mapped back to its ref."""
        found: dict[bytes, tuple[str, str]] = {}
        for ref in set(refs):
            found[legacy_digest(*ref)] = ref
            if self.key is not None:
                found[self.digest(*ref)] = ref
        return found
