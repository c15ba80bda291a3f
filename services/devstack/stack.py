"""What `roac up` does, step by step: check RabbitMQ and PostgreSQL, migrate, start the services
(and the mail catcher), wait until ingest is ready, load the sample community once, supervise."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from datetime import timedelta

import aio_pika
import asyncpg
import httpx

from services.database import migrate
from services.devstack.sample import load_sample
from services.devstack.service_keys import create_service_keys
from services.devstack.supervisor import Supervisor
from shared.parking import apply_policy as apply_parking_policy
from shared.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


async def missing_prerequisites(settings: Settings) -> list[str]:
    problems = []
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=5)
        await connection.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable", reported below
        problems.append(
            f"RabbitMQ is not reachable at ROAC_AMQP_URL ({type(exc).__name__}). "
            "`make run` starts it (or: rabbitmq-server -detached)."
        )
    try:
        conn = await asyncpg.connect(settings.database_url, database="postgres", timeout=5)
        await conn.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"PostgreSQL is not reachable at ROAC_DATABASE_URL ({type(exc).__name__}). "
            "`make run` starts it (or: pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start)."
        )
    return problems


async def sample_already_loaded(settings: Settings) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        found = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM matcher.identities WHERE source = 'sample')"
        )
    finally:
        await conn.close()
    return bool(found)


async def first_operator_link(settings: Settings) -> str | None:
    """With no operator yet, create `operator@example.org` and return the link where they set
    a password (the console's sign-in); None when an operator exists."""
    from services.console.accounts import Accounts

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM console.operators)"):
            return None
        token = await Accounts(pool, timedelta(hours=1)).create_operator(
            "operator@example.org", None
        )
    finally:
        await pool.close()
    return f"{settings.console_base_url}/set-password?token={token}"


async def wait_until_ready(url: str, supervisor: Supervisor, within: float = 90.0) -> bool:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline and not supervisor.stopping:
            try:
                if (await client.get(url)).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return False


async def run_stack(
    settings: Settings, env: dict[str, str], *, dev_key: str | None, sample: bool, mailcatcher: bool
) -> int:
    problems = await missing_prerequisites(settings)
    if problems:
        for problem in problems:
            print(f"roac up: {problem}")
        return 1
    applied = await migrate(settings)
    print(f"roac up: database ready ({len(applied)} migration(s) applied)")
    env = {**env, **await create_service_keys(settings.database_url, env)}
    try:
        print(f"roac up: {await apply_parking_policy(settings)}")
    except Exception as exc:  # noqa: BLE001 - a development stack runs without the bound
        print(f"roac up: parking policy not applied: {exc!r}")

    supervisor = Supervisor(env)
    supervisor.handle_signals()
    catch_mail = (
        mailcatcher
        and settings.smtp_host in LOCAL_HOSTS
        and (settings.smtp_port == settings.mailcatcher_smtp_port)
    )
    if catch_mail and importlib.util.find_spec("aiosmtpd") is None:
        print(
            "roac up: no mail catcher: it needs aiosmtpd, a development dependency "
            "(pip install 'roac[dev]', as make venv does)"
        )
        catch_mail = False
    try:
        if catch_mail:
            await supervisor.start("mailcatcher", "mailcatcher")
        await supervisor.start("matcher", "matcher")
        await supervisor.start("notifier", "notifier")
        await supervisor.start("ingest", "ingest")
        await supervisor.start("console", "console")
        base = f"http://{settings.ingest_host}:{settings.ingest_port}"
        if not await wait_until_ready(f"{base}/readyz", supervisor):
            if not supervisor.stopping:
                print("roac up: ingest did not become ready; see its output above")
            return 1
        key_name, key = (
            dev_key.split(":", 1) if dev_key else next(iter(settings.api_key_secrets.items()))
        )
        print()
        print("roac is up.")
        print(f"  ingest API      {base}/docs")
        if dev_key:
            print(f"  API key         {key}   (development key '{key_name}', new each start;")
            print("                  set ROAC_API_KEYS=name:secret to keep one)")
        if catch_mail:
            print(f"  mail catcher    http://127.0.0.1:{settings.mailcatcher_http_port}")
        print(f"  people's links  {settings.public_url}   (the notifier's public port)")
        print(f"  console         {settings.console_base_url}")
        first_operator = await first_operator_link(settings)
        if first_operator:
            print(f"                  first operator: set a password at {first_operator}")
        print(
            f"  metrics         {base}/metrics, http://{settings.metrics_host}:"
            f"{settings.matcher_port}/metrics, http://{settings.metrics_host}:"
            f"{settings.notifier_metrics_port}/metrics"
        )
        print("  stop            Ctrl-C")
        print()
        if sample and not await sample_already_loaded(settings):
            people, interests = await load_sample(base, key)
            print(
                f"roac up: loaded the sample community: {people} people, {interests} interests; "
                "introductions will appear in the mail catcher"
            )
        await supervisor.run_until_stopped()
    finally:
        await supervisor.stop_all()
    return 0
