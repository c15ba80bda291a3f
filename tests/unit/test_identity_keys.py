"""Identity resolution's rules: what two identities must share to be one person."""

from __future__ import annotations

from services.matcher.identity_keys import (
    Components,
    Link,
    key_digest,
    links_between,
    match_keys,
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


def test_links_come_emails_first_and_once_per_pair() -> None:
    email, handle = key_digest("email", "a@x.org"), key_digest("slack", "U1")
    links = links_between(
        {handle: {3, 1}, email: {1, 2, 3}}, {email: "email", handle: "chat_handle"}
    )
    assert links == [Link(1, 2, "email"), Link(1, 3, "email"), Link(2, 3, "email")]


def test_the_older_contact_survives_and_merges_chain() -> None:
    components = Components()
    assert components.join(5, 3) == (3, 5)
    assert components.join(5, 2) == (2, 3)
    assert {components.root(i) for i in (2, 3, 5)} == {2}
    assert components.root(9) == 9


def test_channel_model_is_what_keys_read() -> None:
    channel = ChannelAddress(type=ChannelType.EMAIL, address="b@x.org")
    assert match_keys(person(channels=[channel])) == {key_digest("email", "b@x.org"): "email"}
