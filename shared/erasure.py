"""Erasure tombstones: what is kept of an erased person, and only that.

A service that erased someone keeps the SHA-256 of their (source, external_id), never the id
itself, so an event naming them that arrives late (an interest published before the erasure, a
proposal already relayed) is recognised and dropped instead of bringing them back.
"""

from __future__ import annotations

import hashlib

# What replaces a person's identifiers and names in rows that must stay (counted history).
ERASED = "erased"


def erasure_digest(source: str, external_id: str) -> bytes:
    """The tombstone key of one identity: 32 bytes, nothing readable."""
    return hashlib.sha256(f"{source}\x00{external_id}".encode()).digest()
