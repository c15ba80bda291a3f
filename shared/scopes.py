"""What an API key may do: its scopes and the sources it may write, as plain Python (no I/O).

Least privilege for integrations: a CRM's key writes the CRM's people and nothing else; reading
introductions, starting rounds that mail a whole community, sending resources from roac's own
sender address and managing keys are separate scopes an operator grants on purpose. Each route
names the one scope it needs (shared/authorization.py checks it); routes that take a person's
`source` also check the key's sources, so a key bound to `crm` cannot upsert, opt out or erase a
`forum` person.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"  # upsert contacts, declare interests, opt out, block a pairing
    # A person's own choices (pause, caps, language) set on their behalf: they outlast anything
    # an integration's events say, so it is granted on purpose (the console's key), not with
    # events:write.
    PREFERENCES_WRITE = "preferences:write"
    CONTACTS_ERASE = "contacts:erase"  # erase a person everywhere
    # What roac holds about a person: profile, channels, interests, identities and merges.
    CONTACTS_READ = "contacts:read"
    INTROS_READ = "intros:read"  # introductions and where each stands, resource deliveries
    INTROS_WRITE = "intros:write"  # feedback on an introduction
    ROUNDS_READ = "rounds:read"  # pools and rounds
    ROUNDS_WRITE = "rounds:write"  # create pools, start rounds (they mail the pool)
    RESOURCES_READ = "resources:read"  # a shared resource and its reach
    RESOURCES_WRITE = "resources:write"  # share a resource (sent from roac's address)
    KEYS_ADMIN = "keys:admin"  # create, rotate, list and revoke API keys


ALL_SCOPES = frozenset(Scope)
# What `roac keys create NAME` grants without --scope: writing its own source's events.
DEFAULT_SCOPES = frozenset({Scope.EVENTS_WRITE})
# Scopes whose routes name a person's source, and so are bound to the key's sources.
SOURCE_BOUND = frozenset(
    {Scope.EVENTS_WRITE, Scope.PREFERENCES_WRITE, Scope.CONTACTS_ERASE, Scope.CONTACTS_READ}
)
ANY_SOURCE = "*"


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scope names to scopes; a ValueError lists the unknown ones and every known one."""
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted({n for n in names if n not in {s.value for s in Scope}})
    if unknown:
        known = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known scopes: {known}")
    return frozenset(Scope(n) for n in names)


@dataclass(frozen=True)
class Grant:
    """An authenticated key: its name, scopes, and the sources it may touch (None: any)."""

    name: str
    scopes: frozenset[Scope]
    sources: frozenset[str] | None

    @classmethod
    def everything(cls, name: str) -> Grant:
        """A ROAC_API_KEYS key: every scope on every source (development and operators' tools)."""
        return cls(name, ALL_SCOPES, None)

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def allows_source(self, source: str) -> bool:
        return self.sources is None or source in self.sources

    def foreign_sources(self, sources: Iterable[str]) -> list[str]:
        """The sources among `sources` this key may not touch, sorted, each once."""
        return sorted({s for s in sources if not self.allows_source(s)})


def sources_from_cli(values: Iterable[str], default: str) -> frozenset[str] | None:
    """`--source` values as stored: none given means the key's own name, `*` means any."""
    values = [v.strip() for v in values if v.strip()]
    if ANY_SOURCE in values:
        return None
    return frozenset(values or [default])
