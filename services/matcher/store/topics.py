"""Topics and interests: who holds what, the topic index live matching reads its candidates
through, and the per-topic lock that serialises matching on a topic. Runs on the connection (and
transaction) of a matcher unit of work (`uow.topics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from services.matcher.scoring import Interest
from services.matcher.store.contacts import reachable
from services.matcher.store.rows import InterestRow, TopicCounts, WithdrawalRow
from shared.events import InterestKind


class TopicRecords:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def upsert_topics(self, names: Iterable[str]) -> dict[str, int]:
        ordered = sorted(set(names))
        await self._conn.execute(
            """
            INSERT INTO matcher.topics (name)
            SELECT n FROM unnest($1::text[]) AS t(n) ORDER BY n
            ON CONFLICT (name) DO NOTHING
            """,
            ordered,
        )
        rows = await self._conn.fetch(
            "SELECT id, name FROM matcher.topics WHERE name = ANY($1::text[])", ordered
        )
        return {r["name"]: r["id"] for r in rows}

    async def lock_topics(self, topic_ids: Iterable[int]) -> None:
        """Serialise matching per topic: a transaction that adds a person to a topic or makes
        one reachable waits for any other doing the same, then sees its committed rows, so two
        people declaring the same topic at once cannot both miss each other."""
        await self._conn.execute(
            "SELECT 1 FROM matcher.topics WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            sorted(set(topic_ids)),
        )

    async def counts(self, topic_ids: Iterable[int]) -> dict[int, TopicCounts]:
        """Each topic's name, holders and meetings (`scoring.topic_stats` weighs them)."""
        rows = await self._conn.fetch(
            "SELECT id, name, people, meetings FROM matcher.topics WHERE id = ANY($1::bigint[])",
            list(set(topic_ids)),
        )
        return {r["id"]: TopicCounts(r["name"], r["people"], r["meetings"]) for r in rows}

    async def known_contact_topics(self, pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which (contact, topic) pairs already have an interest of any kind."""
        pairs = list(set(pairs))
        rows = await self._conn.fetch(
            """
            SELECT t.c AS contact_id, t.tp AS topic_id
            FROM unnest($1::bigint[], $2::bigint[]) AS t(c, tp)
            CROSS JOIN LATERAL (
                SELECT 1 FROM matcher.interests WHERE contact_id = t.c AND topic_id = t.tp LIMIT 1
            ) AS found
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
        return {(r["contact_id"], r["topic_id"]) for r in rows}

    async def upsert_interests(
        self, rows: Sequence[InterestRow]
    ) -> list[tuple[int, int, InterestKind]]:
        """Insert new interests, refresh known ones (unless stale); return the new ones."""
        ordered = sorted(rows, key=lambda r: (r.contact_id, r.topic_id, r.kind.value))
        result = await self._conn.fetch(
            """
            INSERT INTO matcher.interests AS i
                (contact_id, topic_id, kind, weight, declared_at, via)
            SELECT c, t, k, w, d, CASE WHEN v IS NULL THEN '{}'::bigint[] ELSE ARRAY[v] END
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::real[],
                        $5::timestamptz[], $6::bigint[]) AS u(c, t, k, w, d, v)
            ON CONFLICT (contact_id, topic_id, kind) DO UPDATE
                SET weight = CASE WHEN i.declared_at <= EXCLUDED.declared_at
                                  THEN EXCLUDED.weight ELSE i.weight END,
                    declared_at = greatest(i.declared_at, EXCLUDED.declared_at),
                    via = CASE WHEN EXCLUDED.via <@ i.via THEN i.via
                               ELSE i.via || EXCLUDED.via END
                WHERE i.declared_at <= EXCLUDED.declared_at OR NOT EXCLUDED.via <@ i.via
            RETURNING contact_id, topic_id, kind, (xmax = 0) AS inserted
            """,
            [r.contact_id for r in ordered],
            [r.topic_id for r in ordered],
            [r.kind.value for r in ordered],
            [r.weight for r in ordered],
            [r.declared_at for r in ordered],
            [r.identity_id for r in ordered],
        )
        return [
            (r["contact_id"], r["topic_id"], InterestKind(r["kind"]))
            for r in result
            if r["inserted"]
        ]

    async def record_withdrawals(self, rows: Sequence[WithdrawalRow]) -> None:
        """Remember when each identity withdrew each interest (the newest time wins), so that
        an older declaration applied later does not bring it back (`withdrawn_declarations`)."""
        ordered = sorted(rows, key=lambda r: (r.identity_id, r.topic, r.kind.value))
        await self._conn.execute(
            """
            INSERT INTO matcher.interest_withdrawals AS w (identity_id, topic, kind, withdrawn_at)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
            ON CONFLICT (identity_id, topic, kind) DO UPDATE
                SET withdrawn_at = greatest(w.withdrawn_at, EXCLUDED.withdrawn_at)
            """,
            [r.identity_id for r in ordered],
            [r.topic for r in ordered],
            [r.kind.value for r in ordered],
            [r.withdrawn_at for r in ordered],
        )

    async def withdrawn_declarations(
        self, declarations: Sequence[tuple[int, str, InterestKind, datetime]]
    ) -> set[tuple[int, str, InterestKind]]:
        """Which of these (identity, topic, kind, declared at) the identity withdrew at or
        after that moment: stale declarations, to be ignored."""
        if not declarations:
            return set()
        rows = await self._conn.fetch(
            """
            SELECT d.i, d.t, d.k
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[]) AS d(i, t, k, at)
            JOIN matcher.interest_withdrawals w
              ON w.identity_id = d.i AND w.topic = d.t AND w.kind = d.k
            WHERE w.withdrawn_at >= d.at
            """,
            [d[0] for d in declarations],
            [d[1] for d in declarations],
            [d[2].value for d in declarations],
            [d[3] for d in declarations],
        )
        return {(r["i"], r["t"], InterestKind(r["k"])) for r in rows}

    async def withdraw_interests(
        self, rows: Sequence[WithdrawalRow], topic_ids: dict[str, int]
    ) -> set[tuple[int, int]]:
        """Take each identity's part out of the interests it withdrew (declared no later than
        the withdrawal): the interest goes when nobody else of the person declared it too (its
        `via` holds only that identity, or nothing: older than identity resolution); otherwise
        only the identity leaves its `via`. Returns the (contact, topic) pairs that lost a row."""
        ordered = sorted(
            (r for r in rows if r.topic in topic_ids),
            key=lambda r: (r.contact_id, topic_ids[r.topic], r.kind.value),
        )
        if not ordered:
            return set()
        args = (
            [r.contact_id for r in ordered],
            [topic_ids[r.topic] for r in ordered],
            [r.kind.value for r in ordered],
            [r.identity_id for r in ordered],
            [r.withdrawn_at for r in ordered],
        )
        deleted = await self._conn.fetch(
            """
            DELETE FROM matcher.interests AS n
            USING unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                         $5::timestamptz[]) AS w(c, t, k, i, at)
            WHERE n.contact_id = w.c AND n.topic_id = w.t AND n.kind = w.k
              AND n.declared_at <= w.at AND (n.via = '{}' OR n.via <@ ARRAY[w.i])
            RETURNING n.contact_id, n.topic_id
            """,
            *args,
        )
        await self._conn.execute(
            """
            UPDATE matcher.interests AS n SET via = array_remove(n.via, w.i)
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                        $5::timestamptz[]) AS w(c, t, k, i, at)
            WHERE n.contact_id = w.c AND n.topic_id = w.t AND n.kind = w.k
              AND n.declared_at <= w.at AND w.i = ANY(n.via)
            """,
            *args,
        )
        return {(r["contact_id"], r["topic_id"]) for r in deleted}

    async def drop_topic_people(self, decrements: dict[int, int]) -> None:
        """People who no longer hold a topic (of any kind) stop counting for it."""
        if not decrements:
            return
        ordered = sorted(decrements.items())
        await self._conn.execute(
            """
            UPDATE matcher.topics AS t SET people = greatest(t.people - u.n, 0)
            FROM unnest($1::bigint[], $2::int[]) AS u(id, n) WHERE t.id = u.id
            """,
            [k for k, _ in ordered],
            [n for _, n in ordered],
        )

    async def add_topic_people(self, increments: dict[int, int]) -> None:
        if not increments:
            return
        ordered = sorted(increments.items())
        await self._conn.execute(
            """
            UPDATE matcher.topics AS t SET people = t.people + u.n
            FROM unnest($1::bigint[], $2::int[]) AS u(id, n) WHERE t.id = u.id
            """,
            [k for k, _ in ordered],
            [n for _, n in ordered],
        )

    async def topics_of(self, contact_ids: Iterable[int]) -> dict[int, set[int]]:
        rows = await self._conn.fetch(
            "SELECT contact_id, topic_id FROM matcher.interests "
            "WHERE contact_id = ANY($1::bigint[])",
            list(set(contact_ids)),
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["contact_id"], set()).add(r["topic_id"])
        return found

    async def rare_topic_holders(
        self, topic_ids: Iterable[int], max_people: int
    ) -> dict[int, list[int]]:
        """For each of these topics held by at most `max_people` people, its reachable,
        not opted-out holders who like it."""
        rows = await self._conn.fetch(
            f"""
            SELECT i.topic_id, i.contact_id
            FROM matcher.topics t
            JOIN matcher.interests i ON i.topic_id = t.id AND i.kind = 'likes'
            JOIN matcher.contacts c ON c.id = i.contact_id
            WHERE t.id = ANY($1::bigint[]) AND t.people <= $2
              AND {reachable("c")}
            """,  # noqa: S608 (constant fragments, no input)
            sorted(set(topic_ids)),
            max_people,
        )
        found: dict[int, list[int]] = {}
        for r in rows:
            found.setdefault(r["topic_id"], []).append(r["contact_id"])
        return found

    async def candidates(
        self, seeds: Iterable[tuple[int, int]], per_topic: int
    ) -> dict[int, set[int]]:
        """For each (person, topic), up to `per_topic` other reachable people with that topic.

        Read through the topic index as a window starting at a random contact id (wrapping
        around), so the cost is O(per_topic) however popular the topic, and on a popular topic
        every holder is equally likely to be considered, not always the oldest ones."""
        seeds = sorted(set(seeds))
        rows = await self._conn.fetch(
            f"""
            WITH q AS (
                SELECT s.contact_id, s.topic_id,
                       floor(random() * (SELECT max(id) + 1 FROM matcher.contacts))::bigint
                           AS pivot
                FROM unnest($1::bigint[], $2::bigint[]) AS s(contact_id, topic_id)
            )
            SELECT q.contact_id AS person, q.topic_id, c.contact_id AS candidate, c.wrapped
            FROM q
            CROSS JOIN LATERAL (
                -- The window is cut from the index first (an ordered index scan with a LIMIT
                -- on one table), then joined to contacts: with the join inside, the planner
                -- may read and sort every holder of a popular topic (120 ms at 25,000).
                (SELECT w.contact_id, false AS wrapped
                 FROM (SELECT i.contact_id FROM matcher.interests i
                       WHERE i.topic_id = q.topic_id AND i.contact_id >= q.pivot
                         AND i.contact_id <> q.contact_id
                       ORDER BY i.contact_id LIMIT $3 * 2) AS w
                 JOIN matcher.contacts ct ON ct.id = w.contact_id
                 WHERE {reachable("ct")}
                 ORDER BY w.contact_id LIMIT $3)
                UNION ALL
                (SELECT w.contact_id, true AS wrapped
                 FROM (SELECT i.contact_id FROM matcher.interests i
                       WHERE i.topic_id = q.topic_id AND i.contact_id < q.pivot
                         AND i.contact_id <> q.contact_id
                       ORDER BY i.contact_id LIMIT $3 * 2) AS w
                 JOIN matcher.contacts ct ON ct.id = w.contact_id
                 WHERE {reachable("ct")}
                 ORDER BY w.contact_id LIMIT $3)
            ) AS c
            """,  # noqa: S608 (constant fragments, no input)
            [s[0] for s in seeds],
            [s[1] for s in seeds],
            per_topic,
        )
        # Each (person, topic) window: from the pivot upwards, then wrapped around from the
        # lowest id; a person holding a topic under two kinds appears twice, counted once.
        windows: dict[tuple[int, int], list[int]] = {}
        for r in sorted(
            rows, key=lambda r: (r["person"], r["topic_id"], r["wrapped"], r["candidate"])
        ):
            window = windows.setdefault((r["person"], r["topic_id"]), [])
            if r["candidate"] not in window and len(window) < per_topic:
                window.append(r["candidate"])
        found: dict[int, set[int]] = {}
        for (person, _topic), window in windows.items():
            found.setdefault(person, set()).update(window)
        return found

    async def interests_of(
        self, contact_ids: Iterable[int], topic_ids: Iterable[int] | None = None
    ) -> dict[int, list[Interest]]:
        ids = list(set(contact_ids))
        # One primary-key lookup per contact (a person holds a handful of interests). Given the
        # topics as an array, the planner may instead read every holder of a popular topic
        # through the topic index and filter by contact: 115 ms at a million people.
        rows = await self._conn.fetch(
            """
            SELECT i.contact_id, i.topic_id, i.kind, i.weight, i.declared_at
            FROM unnest($1::bigint[]) AS c(id)
            CROSS JOIN LATERAL (
                SELECT contact_id, topic_id, kind, weight, declared_at FROM matcher.interests
                WHERE contact_id = c.id OFFSET 0
            ) AS i
            WHERE $2::bigint[] IS NULL OR i.topic_id = ANY($2::bigint[])
            """,
            ids,
            None if topic_ids is None else list(set(topic_ids)),
        )
        kinds = {k.value: k for k in InterestKind}
        found: dict[int, list[Interest]] = {}
        for r in rows:
            found.setdefault(r["contact_id"], []).append(
                Interest(r["topic_id"], kinds[r["kind"]], float(r["weight"]), r["declared_at"])
            )
        return found

    async def topic_ids(self, names: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT id, name FROM matcher.topics WHERE name = ANY($1::text[])", list(names)
        )
        return {r["name"]: r["id"] for r in rows}

    async def counts_held_by(self, contact_ids: Sequence[int]) -> dict[int, TopicCounts]:
        """The counts of every topic these contacts hold."""
        rows = await self._conn.fetch(
            """
            SELECT t.id, t.name, t.people, t.meetings FROM matcher.topics t
            WHERE t.id IN (SELECT DISTINCT topic_id FROM matcher.interests
                           WHERE contact_id = ANY($1::bigint[]))
            """,
            list(contact_ids),
        )
        return {r["id"]: TopicCounts(r["name"], r["people"], r["meetings"]) for r in rows}
