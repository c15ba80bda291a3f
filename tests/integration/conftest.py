"""Integration tests: one service's code against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.database import migrate
from shared.db import create_pool
from shared.settings import Settings
from tests.support.infra import Infra, isolated_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with isolated_infra("int") as created:
        asyncio.run(migrate(created.settings()))
        yield created


@pytest.fixture(scope="session")
def settings(infra: Infra) -> Settings:
    return infra.settings()


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings, max_size=20)
    yield created
    await created.close()
