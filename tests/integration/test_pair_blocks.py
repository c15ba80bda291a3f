"""An operator's block of a pairing against the real PostgreSQL (services/matcher/pair_blocks.py):
it lands on the contacts the two identities belong to once both are locked, so a merge that
commits between the block's lookup and its lock leaves the block on the surviving contact,
where matching reads it (`matcher.blocks`), not on the absorbed one."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from services.matcher import identity_resolution
from services.matcher.pair_blocks import PairBlocks
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.matcher.store.identities import IdentityRecords
from services.matcher.store.rows import IdentityRow
from shared.errors import TransientError
from shared.events import EventBatch
from tests.integration.test_identity_resolution import VERIFIED, contact, contact_of

Ref = tuple[str, str]
Step = Callable[[], Awaitable[object]]


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool),
        MatchingPolicy(min_score=0.5, candidates_per_topic=50, verified_sources=VERIFIED),
    )


def after_lookup(monkeypatch: pytest.MonkeyPatch, steps: dict[int, Step]) -> None:
    """Run `steps[n]`, in its own transaction, right after the block's n-th identity lookup
    (two per reading of the pair: the first reading is 1 and 2), as if it committed then."""
    original = IdentityRecords.identity
    lookups = 0
    running = False

    async def identity(self: IdentityRecords, ref: Ref) -> IdentityRow | None:
        nonlocal lookups, running
        found = await original(self, ref)
        if running:  # a step's own lookups
            return found
        lookups += 1
        if lookups in steps:
            running = True
            try:
                await steps[lookups]()
            finally:
                running = False
        return found

    monkeypatch.setattr(IdentityRecords, "identity", identity)


async def blocks_of(pool: asyncpg.Pool, contact_id: int) -> set[int]:
    rows = await pool.fetch(
        "SELECT blocked_id FROM matcher.blocks WHERE contact_id = $1", contact_id
    )
    return {r["blocked_id"] for r in rows}


async def arrange(matcher: MatcherService, run: str) -> None:
    """crm/1 (the survivor to be), forum/a (the same person, not yet known to be: no email)
    and crm/b (someone else), each a contact of their own."""
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=f"ada.{run}@x.org")]))
    await matcher.apply(EventBatch(events=[contact(run, "forum", "a")]))
    await matcher.apply(
        EventBatch(events=[contact(run, "crm", "b", name="Bo", email=f"bo.{run}@x.org")])
    )


def merge_forum_into_crm(matcher: MatcherService, run: str) -> Step:
    """forum/a's next upsert carries crm/1's email: forum/a's contact is merged into crm/1's."""
    return lambda: matcher.apply(
        EventBatch(events=[contact(run, "forum", "a", email=f"ada.{run}@x.org")])
    )


async def test_a_merge_between_the_lookup_and_the_lock_leaves_the_block_on_the_survivor(
    matcher: MatcherService, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = uuid.uuid4().hex[:8]
    await arrange(matcher, run)
    absorbed = await contact_of(pool, "forum", f"{run}-a")
    after_lookup(monkeypatch, {2: merge_forum_into_crm(matcher, run)})

    done = await PairBlocks(MatcherStore(pool)).block(("forum", f"{run}-a"), ("crm", f"{run}-b"))

    survivor, other = (
        await contact_of(pool, "crm", f"{run}-1"),
        await contact_of(pool, "crm", f"{run}-b"),
    )
    assert done.created
    assert await contact_of(pool, "forum", f"{run}-a") == survivor != absorbed
    assert await blocks_of(pool, survivor) == {other}
    assert await blocks_of(pool, absorbed) == set()


async def test_moved_at_every_attempt_nothing_is_written_and_the_operator_may_retry(
    matcher: MatcherService, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merged after the first lookup, unmerged after the second attempt's: a transient error
    (the API's 503), no block written; asked again, the block holds."""
    run = uuid.uuid4().hex[:8]
    await arrange(matcher, run)
    person, other = ("forum", f"{run}-a"), ("crm", f"{run}-b")

    async def unmerge() -> None:
        async with MatcherStore(pool).unit_of_work() as uow:
            await identity_resolution.unmerge(uow, person)

    after_lookup(monkeypatch, {2: merge_forum_into_crm(matcher, run), 6: unmerge})
    with pytest.raises(TransientError):
        await PairBlocks(MatcherStore(pool)).block(person, other)
    written = await pool.fetchval(
        "SELECT count(*) FROM matcher.operator_blocks ob JOIN matcher.identities i "
        "ON i.id = ob.identity_id WHERE i.source = $1 AND i.external_id = $2",
        *person,
    )
    assert written == 0

    monkeypatch.undo()
    assert (await PairBlocks(MatcherStore(pool)).block(person, other)).created
    assert await blocks_of(pool, await contact_of(pool, *person)) == {
        await contact_of(pool, *other)
    }
