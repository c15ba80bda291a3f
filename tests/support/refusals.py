"""A database refusal made to order: while open, PostgreSQL refuses (check_violation, which is
not transient) the rows of a table whose column holds a value.

Why: every string the event schemas let through is one PostgreSQL stores, so a test of "one
event the database refuses is parked alone" (and of replaying it once the operator fixed the
cause, which is the end of the block) has to make the refusal itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def refused_rows(
    pool: asyncpg.Pool, table: str, column: str, value: str
) -> AsyncIterator[None]:
    """`table` is schema-qualified (`matcher.proposals`); `column` and `table` come from the
    test, `value` is quoted as a literal."""
    name = f"refusal_{uuid.uuid4().hex[:12]}"
    schema = table.split(".")[0]
    literal = "'" + value.replace("'", "''") + "'"
    await pool.execute(
        f"""
        CREATE FUNCTION {schema}.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.{column} = {literal} THEN
                RAISE EXCEPTION 'refused by a test' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON {table}
            FOR EACH ROW EXECUTE FUNCTION {schema}.{name}();
        """
    )
    try:
        yield
    finally:
        await pool.execute(f"DROP TRIGGER {name} ON {table}; DROP FUNCTION {schema}.{name}();")
