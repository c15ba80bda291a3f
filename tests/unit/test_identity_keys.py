"""Identity resolution's rules: what two identities must share to be one person, which sources
may merge them, and how a merged person's channels are ordered."""

from __future__ import annotations

import pytest

from services.matcher.identity_keys import (
    Components,
    Link,
    MatchedOn,
    MergeReason,
    key_digest,
    links_between,
    match_keys,
    merge_reason,
    merged_channels,
)
from shared.events import ChannelAddress, ChannelType, ContactData


def person(**extra: object) -> ContactData:
    return ContactData.model_validate({"source": "crm", "external_id": "1", "name": "A", **extra})


def test_an_email_matches_whatever_its_case_and_wherever_it_is_given() -> None:
    field = match_keys(person(email="Ada@Example.org"))
    channel = match_keys(person(channels=[{"type": "email", "address": "ada@example.ORG"}]))
    assert field == channel == {key_digest("email", "ada@example.org"): "email"}


def test_a_chat_handle_matches_only_on_the_same_platform() -> None:
    keys = match_keys(person(channels=[{"type": "slack", "address": "U024BE7LH"}]))
    assert keys == {key_digest("slack", "U024BE7LH"): "chat_handle"}
    # A webhook URL or a Matrix room is a place, not a person: never a key.
    assert match_keys(person(channels=[{"type": "matrix", "address": "!r:example.org"}])) == {}


def test_a_person_without_email_or_handle_has_no_key() -> None:
    assert match_keys(person()) == {}


def test_stored_keys_are_digests_not_addresses() -> None:
    (digest,) = match_keys(person(email="ada@example.org"))
    assert len(digest) == 32 and b"ada" not in digest


VERIFIED = frozenset({"crm", "sso"})


@pytest.mark.parametrize(
    ("source_a", "source_b", "expected"),
    [
        # One source vouches for its own identities, verified or not.
        ("crm", "crm", "same_source"),
        ("forum", "forum", "same_source"),
        # Across sources: only when both verify the identifiers they send.
        ("crm", "sso", "verified_sources"),
        ("sso", "crm", "verified_sources"),
        # One unverified side is enough to refuse: it could have sent anyone's email.
        ("crm", "forum", None),
        ("forum", "crm", None),
        ("forum", "signup", None),
    ],
)
def test_which_sources_may_merge(
    source_a: str, source_b: str, expected: MergeReason | None
) -> None:
    assert merge_reason(source_a, source_b, VERIFIED) == expected


def test_nothing_is_verified_by_default() -> None:
    assert merge_reason("crm", "sso", frozenset()) is None
    assert merge_reason("crm", "crm", frozenset()) == "same_source"


def test_links_come_emails_first_and_once_per_pair() -> None:
    email, handle = key_digest("email", "a@x.org"), key_digest("slack", "U1")
    links = links_between(
        {handle: {(3, "crm"), (1, "crm")}, email: {(1, "crm"), (2, "crm"), (3, "crm")}},
        {email: "email", handle: "chat_handle"},
    )
    assert links == [
        Link(1, 2, "email", "same_source", ("crm", "crm")),
        Link(1, 3, "email", "same_source", ("crm", "crm")),
        Link(2, 3, "email", "same_source", ("crm", "crm")),
    ]


def test_a_link_from_an_unverified_source_is_refused_and_an_allowed_one_preferred() -> None:
    email, handle = key_digest("email", "a@x.org"), key_digest("slack", "U1")
    kinds: dict[bytes, MatchedOn] = {email: "email", handle: "chat_handle"}
    # Contact 1 (crm) and 2 (forum, unverified) share an email: refused, but listed.
    (refused,) = links_between({email: {(1, "crm"), (2, "forum")}}, kinds, VERIFIED)
    assert refused == Link(1, 2, "email", None, ("crm", "forum")) and not refused.allowed
    # Contact 2 also holds a crm identity sharing the Slack handle: that link merges them.
    (allowed,) = links_between(
        {email: {(1, "crm"), (2, "forum")}, handle: {(1, "crm"), (2, "crm")}}, kinds, VERIFIED
    )
    assert allowed == Link(1, 2, "chat_handle", "same_source", ("crm", "crm"))
    # Verified on both sides: merged, and the reason says so.
    (verified,) = links_between({email: {(1, "crm"), (2, "sso")}}, kinds, VERIFIED)
    assert verified.reason == "verified_sources" and verified.sources == ("crm", "sso")


def test_identities_of_one_contact_are_no_link() -> None:
    email = key_digest("email", "a@x.org")
    assert links_between({email: {(1, "crm"), (1, "sso")}}, {email: "email"}, VERIFIED) == []


def _email(address: str) -> ChannelAddress:
    return ChannelAddress(type=ChannelType.EMAIL, address=address)


def _hook(url: str) -> ChannelAddress:
    return ChannelAddress(type=ChannelType.WEBHOOK, address=url)


@pytest.mark.parametrize(
    ("per_identity", "expected"),
    [
        # One identity: its own channels, as given.
        ([[_email("a@x.org"), _hook("https://h.example/a")]], ["a@x.org", "https://h.example/a"]),
        # A later identity's channels come after the older one's, never ahead of them.
        (
            [[_email("a@x.org")], [_hook("https://h.example/b"), _email("b@x.org")]],
            ["a@x.org", "https://h.example/b", "b@x.org"],
        ),
        # A channel the older identity already lists keeps its place (case-insensitive email).
        (
            [[_email("a@x.org"), _hook("https://h.example/a")], [_email("A@X.org")]],
            ["a@x.org", "https://h.example/a"],
        ),
        # A later identity listing the older one's channels in another order reorders nothing.
        (
            [
                [_email("a@x.org"), _hook("https://h.example/a")],
                [_hook("https://h.example/a"), _email("a@x.org")],
            ],
            ["a@x.org", "https://h.example/a"],
        ),
        # An older identity without channels yet: the next one's are the person's.
        ([[], [_email("b@x.org")]], ["b@x.org"]),
    ],
)
def test_merged_channels_keep_each_identity_s_own_in_arrival_order(
    per_identity: list[list[ChannelAddress]], expected: list[str]
) -> None:
    assert [c.address for c in merged_channels(per_identity)] == expected


def test_the_older_contact_survives_and_merges_chain() -> None:
    components = Components()
    assert components.join(5, 3) == (3, 5)
    assert components.join(5, 2) == (2, 3)
    assert {components.root(i) for i in (2, 3, 5)} == {2}
    assert components.root(9) == 9


def test_channel_model_is_what_keys_read() -> None:
    channel = ChannelAddress(type=ChannelType.EMAIL, address="b@x.org")
    assert match_keys(person(channels=[channel])) == {key_digest("email", "b@x.org"): "email"}
