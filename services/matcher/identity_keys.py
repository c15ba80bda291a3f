"""Identity resolution's rules, in plain Python: what makes two identities one person, when
their sources may be trusted to say so, which contact survives a merge, and how the merged
person's channels are ordered.

Two identities are one person when they share an email address (case-insensitive) or the same
chat handle on the same platform (a Slack member id). Only SHA-256 digests of these keys are
stored, so the table that finds merges holds no address.

A shared key merges only when both identities come from one source (the integration vouches for
its own people) or both sources are ones the operator lists as verifying their identifiers
(ROAC_IDENTITY_VERIFIED_SOURCES). Otherwise any integration could claim someone's email and take
over their person: the merged profile, its channels, the asks and their answer links.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.events import ChannelAddress, ChannelType, ContactData

MatchedOn = Literal["email", "chat_handle"]
# Why a merge was allowed: both identities come from one source, or from two sources that both
# verify their identifiers.
MergeReason = Literal["same_source", "verified_sources"]


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


def merge_reason(source_a: str, source_b: str, verified: frozenset[str]) -> MergeReason | None:
    """Why two identities that share a key may be merged, or None when they may not: one
    source's word about its own identities is trusted; across sources, only when both verify
    the identifiers they send (an unverified source could send anyone's email)."""
    if source_a == source_b:
        return "same_source"
    if source_a in verified and source_b in verified:
        return "verified_sources"
    return None


Owner = tuple[int, str]  # (contact id, source) of an identity holding a key


@dataclass(frozen=True, slots=True)
class Link:
    """Two contacts found to share a key, through identities of these two sources; `reason`
    is None when those sources may not merge them."""

    a: int
    b: int
    matched_on: MatchedOn
    reason: MergeReason | None = None
    sources: tuple[str, str] = ("", "")

    @property
    def allowed(self) -> bool:
        return self.reason is not None


def _rank(link: Link) -> tuple[bool, bool, bool]:
    return (not link.allowed, link.matched_on != "email", link.reason != "same_source")


def links_between(
    owners: dict[bytes, set[Owner]],
    kinds: dict[bytes, MatchedOn],
    verified: frozenset[str] = frozenset(),
) -> list[Link]:
    """Every pair of distinct contacts that share a key, once, with the best way they are
    linked (allowed before refused, email before chat handle, same source before verified
    sources), in a fixed order (emails first, then by ids) so that merges happen in the same
    order on every run. Refused links are returned too, so they can be counted."""
    found: dict[tuple[int, int], Link] = {}
    for digest, holders in owners.items():
        kind = kinds.get(digest, "email")
        ordered = sorted(holders)
        for i, (a, source_a) in enumerate(ordered):
            for b, source_b in ordered[i + 1 :]:
                if a == b:
                    continue
                link = Link(
                    a,
                    b,
                    kind,
                    merge_reason(source_a, source_b, verified),
                    (source_a, source_b),
                )
                best = found.get((a, b))
                if best is None or _rank(link) < _rank(best):
                    found[(a, b)] = link
    return sorted(found.values(), key=lambda link: (link.matched_on != "email", link.a, link.b))


def _channel_key(channel: ChannelAddress) -> tuple[str, str]:
    address = channel.address.strip()
    if channel.type is ChannelType.EMAIL:
        address = address.lower()
    return channel.type.value, address


def merged_channels(per_identity: Iterable[Sequence[ChannelAddress]]) -> list[ChannelAddress]:
    """A merged person's channels, given each identity's own in the order the identities came
    to roac (oldest first: the one the person is presented under): the oldest identity's
    channels in its own order, then each later identity's channels not already listed. An
    update from one source changes only its own part, so it can never remove, reorder or get
    ahead of the channels of an identity that came before it."""
    seen: set[tuple[str, str]] = set()
    channels: list[ChannelAddress] = []
    for own in per_identity:
        for channel in own:
            key = _channel_key(channel)
            if key not in seen:
                seen.add(key)
                channels.append(channel)
    return channels


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
