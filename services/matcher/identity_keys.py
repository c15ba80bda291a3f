"""Identity resolution's rules, in plain Python: what makes two identities one person, and
which contact survives a merge.

Two identities are one person when they share an email address (case-insensitive) or the same
chat handle on the same platform (a Slack member id). Only SHA-256 digests of these keys are
stored, so the table that finds merges holds no address.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from shared.events import ChannelType, ContactData

MatchedOn = Literal["email", "chat_handle"]


def key_digest(platform: str, value: str) -> bytes:
    return hashlib.sha256(f"{platform}:{value}".encode()).digest()


def match_keys(contact: ContactData) -> dict[bytes, MatchedOn]:
    """The digests this identity is matched on, each with what it stands for."""
    keys: dict[bytes, MatchedOn] = {}
    emails = {contact.email} if contact.email else set()
    emails |= {c.address for c in contact.channels if c.type is ChannelType.EMAIL}
    for email in emails:
        keys[key_digest("email", email.strip().lower())] = "email"
    for channel in contact.channels:
        if channel.type is ChannelType.SLACK:
            # Slack member ids are upper-case tokens; the platform is part of the key.
            keys[key_digest("slack", channel.address.strip().upper())] = "chat_handle"
    return keys


@dataclass(frozen=True, slots=True)
class Link:
    """Two contacts found to share a key."""

    a: int
    b: int
    matched_on: MatchedOn


def links_between(owners: dict[bytes, set[int]], kinds: dict[bytes, MatchedOn]) -> list[Link]:
    """Every pair of distinct contacts that share a key, once, in a fixed order (emails first,
    then by ids) so that merges happen in the same order on every run."""
    found: dict[tuple[int, int], MatchedOn] = {}
    for digest, contacts in owners.items():
        ordered = sorted(contacts)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                kind = kinds.get(digest, "email")
                if found.get((a, b)) != "email":
                    found[(a, b)] = kind
    return sorted(
        (Link(a, b, kind) for (a, b), kind in found.items()),
        key=lambda link: (link.matched_on != "email", link.a, link.b),
    )


class Components:
    """Union-find over contact ids: which contact each one has been merged into so far. The
    survivor of a merge is the older contact (the lower id), so its id stays in proposals,
    group keys and links already sent."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    @property
    def absorbed(self) -> set[int]:
        """Every contact merged into another."""
        return set(self._parent)

    def root(self, contact_id: int) -> int:
        parent = self._parent.get(contact_id, contact_id)
        if parent == contact_id:
            return contact_id
        top = self.root(parent)
        self._parent[contact_id] = top
        return top

    def join(self, a: int, b: int) -> tuple[int, int]:
        """Record the merge of the two components; return (survivor, absorbed)."""
        survivor, absorbed = sorted((self.root(a), self.root(b)))
        self._parent[absorbed] = survivor
        return survivor, absorbed
