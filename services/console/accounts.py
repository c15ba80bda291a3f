"""Operators, their sessions, the sign-in rate limit and the audit list: the only data the
console owns (schema `console`).

- Passwords are hashed with Argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), in a thread so
  that a sign-in does not stall other requests; an unknown email costs the same as a wrong
  password, so the answer's timing does not tell which emails have an account.
- A session is a row (its id, expiry and the CSRF token of its forms); the cookie holds the id,
  signed (services/console/cookies.py). Signing out or expiry ends it on the server too.
- Failed sign-ins are counted per email and per client address over a window; past either
  limit, sign-in is refused (even with the right password) until the window moves on.
- Each audit row lists the people it mentions, so that an erased person's mentions can be found
  and replaced (services/console/audit_people.py, erasure_sweep.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.console.audit_people import AuditRow, forget_in_row, people_named

# Failed sign-ins allowed per email, and per client address, within the window.
FAILURES_PER_EMAIL = 5
FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(minutes=15)
SETUP_LINK_LIFETIME = timedelta(hours=72)
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()  # Argon2id
# Verified when the email has no account, so that a miss takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInRefused(Exception):
    """Wrong email or password (never which), or too many failures."""

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


@dataclass(frozen=True)
class Session:
    id: UUID
    operator: str
    csrf_token: str
    expires_at: datetime


def normalise_email(email: str) -> str:
    return email.strip().lower()


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 1024:
        return "Choose a password of at most 1,024 characters."
    return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(self, pool: asyncpg.Pool, session_lifetime: timedelta) -> None:
        self._pool = pool
        self._lifetime = session_lifetime

    # Operators

    async def create_operator(self, email: str, password: str | None) -> str | None:
        """Create (or reset) an operator; with no password, return a one-time set-password
        token (valid 72 hours), else None. A reset ends the operator's sessions."""
        email = normalise_email(email)
        token = None if password is not None else secrets.token_urlsafe(32)
        hashed = await asyncio.to_thread(_hasher.hash, password) if password else None
        async with self._pool.acquire() as conn, conn.transaction():
            operator_id = await conn.fetchval(
                """
                INSERT INTO console.operators (email, password_hash, setup_digest, setup_expires_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (email) DO UPDATE SET
                    password_hash = EXCLUDED.password_hash, setup_digest = EXCLUDED.setup_digest,
                    setup_expires_at = EXCLUDED.setup_expires_at, disabled_at = NULL
                RETURNING id
                """,
                email,
                hashed,
                _digest(token) if token else None,
                datetime.now(UTC) + SETUP_LINK_LIFETIME if token else None,
            )
            await conn.execute(
                "UPDATE console.sessions SET ended_at = now() "
                "WHERE operator_id = $1 AND ended_at IS NULL",
                operator_id,
            )
        return token

    async def setup_email(self, token: str) -> str | None:
        """The operator a set-password token is for, while it is valid."""
        async with self._pool.acquire() as conn:
            email: str | None = await conn.fetchval(
                "SELECT email FROM console.operators "
                "WHERE setup_digest = $1 AND setup_expires_at > now() AND disabled_at IS NULL",
                _digest(token),
            )
        return email

    async def set_password(self, token: str, password: str) -> str | None:
        """Use a set-password token once; return the operator's email, None if it is invalid."""
        hashed = await asyncio.to_thread(_hasher.hash, password)
        async with self._pool.acquire() as conn:
            email: str | None = await conn.fetchval(
                """
                UPDATE console.operators
                SET password_hash = $2, setup_digest = NULL, setup_expires_at = NULL
                WHERE setup_digest = $1 AND setup_expires_at > now() AND disabled_at IS NULL
                RETURNING email
                """,
                _digest(token),
                hashed,
            )
        return email

    # Sign-in and sessions

    async def sign_in(self, email: str, password: str, address: str) -> Session:
        email = normalise_email(email)
        async with self._pool.acquire() as conn:
            failures = await conn.fetchrow(
                """
                SELECT count(*) FILTER (WHERE email = $1) AS by_email,
                       count(*) FILTER (WHERE address = $2) AS by_address
                FROM console.signin_attempts
                WHERE NOT succeeded AND at > now() - $3::interval
                  AND (email = $1 OR address = $2)
                """,
                email,
                address,
                FAILURE_WINDOW,
            )
            if (
                failures["by_email"] >= FAILURES_PER_EMAIL
                or failures["by_address"] >= FAILURES_PER_ADDRESS
            ):
                raise SignInRefused(
                    "Too many failed sign-ins: wait 15 minutes and try again.", throttled=True
                )
            row = await conn.fetchrow(
                "SELECT id, password_hash FROM console.operators "
                "WHERE email = $1 AND disabled_at IS NULL",
                email,
            )
        stored = row["password_hash"] if row is not None else None
        valid = await asyncio.to_thread(_verify, stored or _DUMMY_HASH, password)
        valid = valid and stored is not None
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO console.signin_attempts (email, address, succeeded) "
                "VALUES ($1, $2, $3)",
                email,
                address,
                valid,
            )
            # Attempts older than a day count for nothing: pruned as they go by.
            await conn.execute(
                "DELETE FROM console.signin_attempts WHERE at < now() - interval '1 day'"
            )
        if not valid or row is None:
            raise SignInRefused("Wrong email or password.")
        async with self._pool.acquire() as conn, conn.transaction():
            session = Session(
                uuid4(), email, secrets.token_urlsafe(32), datetime.now(UTC) + self._lifetime
            )
            await conn.execute(
                "INSERT INTO console.sessions (id, operator_id, csrf_token, expires_at) "
                "VALUES ($1, $2, $3, $4)",
                session.id,
                row["id"],
                session.csrf_token,
                session.expires_at,
            )
            if _hasher.check_needs_rehash(stored or ""):
                rehashed = await asyncio.to_thread(_hasher.hash, password)
                await conn.execute(
                    "UPDATE console.operators SET password_hash = $2 WHERE id = $1",
                    row["id"],
                    rehashed,
                )
        return session

    async def session(self, session_id: UUID) -> Session | None:
        """The session while it holds: not ended, not expired, its operator not disabled."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """
                SELECT s.id, o.email, s.csrf_token, s.expires_at
                FROM console.sessions s JOIN console.operators o ON o.id = s.operator_id
                WHERE s.id = $1 AND s.ended_at IS NULL AND s.expires_at > now()
                  AND o.disabled_at IS NULL
                """,
                session_id,
            )
        if row is None:
            return None
        return Session(row["id"], row["email"], row["csrf_token"], row["expires_at"])

    async def sign_out(self, session_id: UUID) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE console.sessions SET ended_at = now() WHERE id = $1", session_id
            )

    # Audit

    async def record(
        self,
        operator: str,
        action: str,
        target: str,
        outcome: str,
        detail: str = "",
        people: Iterable[str] = (),
    ) -> None:
        """One row of the audit list; `people` are those it mentions (`source/external_id`:
        the target person and any other the action names), whom the erasure sweep checks."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO console.audit (operator, action, target, outcome, detail, people) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                operator,
                action,
                target[:500],
                outcome,
                detail[:1000],
                people_named(people),
            )

    async def forget_person(self, person: str) -> int:
        """An erased person is named in no audit row: each mention of them (target, detail,
        `people`) becomes "an erased person" (services/console/audit_people.py). Rows recorded
        before `people` was kept are found by their text. Returns how many rows changed."""
        mention = f"person {person}"
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, target, detail, people FROM console.audit
                WHERE people @> ARRAY[$1] OR target = $2 OR strpos(detail, $2) > 0
                FOR UPDATE
                """,
                person,
                mention,
            )
            changed = []
            for row in rows:
                before = AuditRow(row["target"], row["detail"], list(row["people"]))
                after = forget_in_row(before, person)
                if after != before:
                    changed.append((row["id"], after.target, after.detail, list(after.people)))
            await conn.executemany(
                "UPDATE console.audit SET target = $2, detail = $3, people = $4 WHERE id = $1",
                changed,
            )
        return len(changed)

    async def audited_people(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` distinct people the audit list names, in order, after `after` (the
        sweep's cursor); the placeholder of a forgotten person is not one."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT DISTINCT person FROM console.audit, unnest(people) AS person
                WHERE strpos(person, '/') > 0 AND ($1::text IS NULL OR person > $1)
                ORDER BY person LIMIT $2
                """,
                after,
                limit,
            )
        return [row["person"] for row in rows]

    async def audit(self, limit: int, before: int | None) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                """
                SELECT id, at, operator, action, target, outcome, detail FROM console.audit
                WHERE ($2::bigint IS NULL OR id < $2)
                ORDER BY id DESC LIMIT $1
                """,
                limit,
                before,
            )
        return rows


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
