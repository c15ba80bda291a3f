"""The `roac` command: run each service, migrate the database, or bring the whole stack up."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from shared.secret_policy import new_secret
from shared.settings import Settings

T = TypeVar("T")

# Allocations between young-generation collections (CPython default: 700).
GC_YOUNG_THRESHOLD = 20_000

app = typer.Typer(
    help="roac: random acts of connection. Every setting is a ROAC_* environment variable.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from shared.version import roac_version

        typer.echo(f"roac {roac_version()}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """roac: random acts of connection. Every setting is a ROAC_* environment variable."""


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a service's main coroutine on uvloop (libuv) when installed: the services are I/O
    bound, and uvloop roughly halves the event loop's cost per message."""
    _tune_garbage_collector()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _tune_garbage_collector() -> None:
    """Collect cycles less often, and never walk what start-up loaded. Decoding one message of
    1,000 events allocates enough for about ten young collections under CPython's defaults (one
    per 700 allocations), and every tenth message or so a full one, which walked the ~100,000
    objects start-up leaves behind each time. Peak memory did not change (docs/import.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Never echo the input: a refused value may be (part of) a secret.
        for error in exc.errors(include_input=False, include_url=False):
            setting = "ROAC_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"configuration error: {setting}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def migrate() -> None:
    """Create the database if missing and apply new migrations, then bound the parking queues
    (the RabbitMQ policy roac-parking); safe to run again."""
    from services.database import migrate as run_migrations
    from shared.parking import policy_for_migrate

    settings = _settings()
    applied = asyncio.run(run_migrations(settings))
    for m in applied:
        typer.echo(f"applied {m.component} {m.version:04d}_{m.name}")
    typer.echo(f"database is up to date ({len(applied)} migration(s) applied now)")
    # RabbitMQ's side: parking queues bounded by age and size; not applying it fails the
    # command where it was asked for (ROAC_RABBITMQ_MANAGEMENT_URL: shared/parking.py).
    outcome = asyncio.run(policy_for_migrate(settings))
    typer.echo(outcome.report, err=not outcome.applied)
    raise typer.Exit(outcome.exit_code)


@app.command()
def ingest() -> None:
    """Run the ingest HTTP API (ROAC_INGEST_HOST:ROAC_INGEST_PORT)."""
    from services.ingest.app import run

    _run(run(_settings()))


@app.command()
def matcher() -> None:
    """Run the matcher (its API, metrics and health checks on ROAC_MATCHER_PORT)."""
    from services.matcher.app import run

    _run(run(_settings()))


@app.command()
def notifier() -> None:
    """Run the notifier (metrics on ROAC_NOTIFIER_METRICS_PORT)."""
    from services.notifier.app import run

    _run(run(_settings()))


@app.command()
def console() -> None:
    """Run the console, operators' web pages (ROAC_CONSOLE_HOST:ROAC_CONSOLE_PORT)."""
    from services.console.app import run

    _run(run(_settings()))


operators = typer.Typer(help="Operator accounts of the console (services/console/).")
app.add_typer(operators, name="operators")


@operators.command("create")
def operators_create(
    email: Annotated[str, typer.Argument(help="The operator's email: their sign-in name")],
    password: Annotated[
        str | None,
        typer.Option(help="Set this password now (scripted set-ups); default: print a link"),
    ] = None,
) -> None:
    """Create an operator (or reset one: their sessions end). Prints a one-time link, valid 72
    hours, where they choose their password, unless --password is given."""
    from datetime import timedelta

    from services.console.accounts import Accounts, password_problem
    from shared.email_address import check_email

    settings = _settings()
    try:
        check_email(email)
    except ValueError as exc:
        typer.echo(f"invalid email: {exc}", err=True)
        raise typer.Exit(2) from exc
    if password is not None and (problem := password_problem(password)):
        typer.echo(problem, err=True)
        raise typer.Exit(2)

    async def create() -> str | None:
        from shared.db import create_pool

        pool = await create_pool(settings, max_size=1)
        try:
            return await Accounts(pool, timedelta(hours=1)).create_operator(email, password)
        finally:
            await pool.close()

    token = _with_database(create())
    if token is None:
        typer.echo(f"operator {email.strip().lower()} can sign in with the password given")
        return
    typer.echo(f"{settings.console_base_url}/set-password?token={token}")
    typer.echo(
        f"operator {email.strip().lower()} created: send them this link (one use, 72 hours)",
        err=True,
    )


MAILCATCHER_NEEDS_DEV = (
    "the mail catcher needs aiosmtpd, a development dependency not in the image: "
    "pip install 'roac[dev]' (make venv does)"
)


@app.command()
def mailcatcher() -> None:
    """Run the local mail catcher (SMTP on ROAC_MAILCATCHER_SMTP_PORT, web on ..._HTTP_PORT)."""
    try:
        from services.devstack.mailcatcher import run
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "aiosmtpd":
            raise
        typer.echo(MAILCATCHER_NEEDS_DEV, err=True)
        raise typer.Exit(2) from None

    s = _settings()
    asyncio.run(run("127.0.0.1", s.mailcatcher_smtp_port, s.mailcatcher_http_port))


@app.command("load-sample")
def load_sample_command(
    url: Annotated[str, typer.Option(help="Ingest base URL")] = "",
    key: Annotated[str, typer.Option(help="API key (default: the first of ROAC_API_KEYS)")] = "",
) -> None:
    """Post the sample community (invented people at example.org) to ingest."""
    from services.devstack.sample import load_sample

    s = _settings()
    api_key = key or next(iter(s.api_key_secrets.values()), "")
    if not api_key:
        typer.echo("no API key: pass --key or set ROAC_API_KEYS", err=True)
        raise typer.Exit(2)
    base = url or f"http://{s.ingest_host}:{s.ingest_port}"
    people, interests = asyncio.run(load_sample(base, api_key))
    typer.echo(f"accepted {people} people and {interests} interests")


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="A CSV or JSON Lines file (docs/import.md)")],
    format: Annotated[
        str, typer.Option("--format", help="csv or jsonl (default: by the file's extension)")
    ] = "",
    url: Annotated[str, typer.Option(help="Ingest base URL (default: ROAC_INGEST_HOST/PORT)")] = "",
    api_key: Annotated[
        str,
        typer.Option(
            help="API key (default: ROAC_IMPORT_API_KEY, else the first of ROAC_API_KEYS)"
        ),
    ] = "",
    source: Annotated[str, typer.Option(help="`source` for lines that name none")] = "",
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Lines per request")] = 500,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests in flight")] = 4,
    restart: Annotated[
        bool, typer.Option(help="Start from the first line, ignoring a checkpoint")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on a terminal")] = True,
    stop_after_batches: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Import people and interests from FILE through ingest, resumably. Imported interests feed
    the next round: an import introduces nobody at once. Exit code 1 if any line was rejected."""
    from services.tools.import_cli import run_import

    s = _settings()
    key = api_key or os.environ.get("ROAC_IMPORT_API_KEY", "")
    key = key or next(iter(s.api_key_secrets.values()), "")
    if not key:
        typer.echo("no API key: pass --api-key or set ROAC_IMPORT_API_KEY", err=True)
        raise typer.Exit(2)
    if format not in ("", "csv", "jsonl"):
        typer.echo("--format is csv or jsonl", err=True)
        raise typer.Exit(2)
    code = run_import(
        file,
        url=url or f"http://{s.ingest_host}:{s.ingest_port}",
        api_key=key,
        format=format or None,
        source=source or None,
        batch=batch,
        concurrency=concurrency,
        restart=restart,
        progress=progress,
        stop_after_batches=stop_after_batches,
        max_interests_per_person=s.ingest_max_interests_per_person,
    )
    raise typer.Exit(code)


@app.command()
def up(
    sample: Annotated[bool, typer.Option(help="Load the sample community on first start")] = True,
    mail_catcher: Annotated[
        bool, typer.Option("--mailcatcher/--no-mailcatcher", help="Run the local mail catcher")
    ] = True,
) -> None:
    """Migrate, then run ingest, matcher, notifier, the console (and a mail catcher) here.

    Ctrl-C stops everything cleanly. Without ROAC_API_KEYS a development key is generated and
    printed.
    """
    from services.devstack.stack import run_stack

    settings = _settings()
    env = dict(os.environ)
    dev_key = None
    if not settings.api_key_secrets:
        dev_key = f"dev:{new_secret()}"
        env["ROAC_API_KEYS"] = dev_key
    if not settings.link_keyring:
        # Links in messages sent during this run stop working when the stack restarts.
        env["ROAC_LINK_KEYS"] = f"dev:{new_secret()}"
    if settings.erasure_key_bytes is None:
        # Erasures of this run are not recognised after a restart: set it to keep them.
        env["ROAC_ERASURE_KEY"] = new_secret()
        typer.echo("ROAC_ERASURE_KEY not set: a key for this run only", err=True)
    if not settings.console_session_key.get_secret_value():
        # Console sessions of this run end when the stack restarts.
        env["ROAC_CONSOLE_SESSION_KEY"] = new_secret()
    # The console's and the notifier's own keys, when not set, are made after migrating
    # (services/devstack/service_keys.py): each with its own scopes, not the operator key.
    sys.exit(
        asyncio.run(
            run_stack(settings, env, dev_key=dev_key, sample=sample, mailcatcher=mail_catcher)
        )
    )


secrets_app = typer.Typer(
    help="Secrets for a deployment: each purpose its own, every one strong (the services refuse "
    "placeholders and low-entropy values at start)."
)
app.add_typer(secrets_app, name="secrets")


def _link_key_id() -> str:
    # Sortable by creation, short, and no personal data: the UTC date and a random suffix.
    return f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"


@secrets_app.command("generate")
def secrets_generate() -> None:
    """Print fresh secrets as environment lines (KEY=value), ready for a .env file or a
    Kubernetes Secret: the link key ring, the webhook signing key, the erasure key and the
    console's session key."""
    typer.echo(f"ROAC_LINK_KEYS={_link_key_id()}:{new_secret()}")
    typer.echo(f"ROAC_WEBHOOK_SIGNING_KEY={new_secret()}")
    typer.echo(f"ROAC_ERASURE_KEY={new_secret()}")
    typer.echo(f"ROAC_CONSOLE_SESSION_KEY={new_secret()}")


@secrets_app.command("rotate-link-keys")
def secrets_rotate_link_keys(
    current: Annotated[
        str, typer.Argument(help="The current ROAC_LINK_KEYS value (or set it in the env)")
    ] = "",
    keep: Annotated[int, typer.Option(help="Older keys kept to verify links already sent")] = 2,
) -> None:
    """Print a new ROAC_LINK_KEYS value: a new key first (it signs from now on), then the
    current keys (they still verify links already sent), at most --keep of them."""
    from shared.settings import parse_link_keys

    raw = current or os.environ.get("ROAC_LINK_KEYS", "")
    try:
        ring = parse_link_keys(raw)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if not ring:
        typer.echo("no current link keys given: use `roac secrets generate`", err=True)
        raise typer.Exit(2)
    kept = ring[: max(keep, 0)]
    pairs = [(_link_key_id(), new_secret()), *kept]
    typer.echo("ROAC_LINK_KEYS=" + ",".join(f"{key_id}:{secret}" for key_id, secret in pairs))
    if len(ring) > len(kept):
        dropped = ", ".join(key_id for key_id, _ in ring[len(kept) :])
        typer.echo(f"dropped {dropped}: links signed with it no longer work", err=True)


webhooks = typer.Typer(
    help="The generic webhook: each destination verifies roac's messages with its own secret."
)
app.add_typer(webhooks, name="webhooks")


@webhooks.command("secret")
def webhooks_secret(
    url: Annotated[str, typer.Argument(help="The destination URL, as in the contact's channel")],
) -> None:
    """Print this destination's `whsec_` secret (Standard Webhooks), derived from
    ROAC_WEBHOOK_SIGNING_KEY: give it to that receiver only; it signs nothing else."""
    from services.notifier.channels.webhook_signing import (
        destination_secret,
        normalise_destination,
    )

    key = _settings().webhook_signing_key.get_secret_value()
    if not key:
        typer.echo("ROAC_WEBHOOK_SIGNING_KEY is not set: `roac secrets generate`", err=True)
        raise typer.Exit(2)
    try:
        secret = destination_secret(key.encode(), url)
    except ValueError as exc:
        typer.echo(f"invalid URL: {exc}", err=True)
        raise typer.Exit(2) from exc
    # The secret alone on stdout; which destination it is for on stderr.
    typer.echo(secret)
    typer.echo(f"secret of {normalise_destination(url)}", err=True)


deliveries = typer.Typer(help="Parked deliveries (out of attempts after transient failures).")
app.add_typer(deliveries, name="deliveries")


@deliveries.command("list")
def deliveries_list() -> None:
    """Show parked deliveries."""
    from services.notifier.replay import list_parked

    parked = asyncio.run(list_parked(_settings()))
    for row in parked:
        typer.echo(
            f"{row['delivery_id']}  {row['kind']:<5} {row['channel']:<13} "
            f"attempts={row['attempts']}  proposal={row['proposal_id']}"
        )
    typer.echo(f"{len(parked)} parked")


@deliveries.command("retry")
def deliveries_retry() -> None:
    """Replay parked deliveries with a fresh budget of attempts (the notifier sends them)."""
    from services.notifier.replay import retry_parked

    report = asyncio.run(retry_parked(_settings()))
    typer.echo(
        f"replayed {report.replayed}, already done {report.already_done}, "
        f"unreadable left in the queue {report.unreadable}"
    )


dlq = typer.Typer(
    help="Parking queues (matcher, notifier, deliveries, ingress): list what is parked and why, "
    "replay it where it came from (services/dlq.py)."
)
app.add_typer(dlq, name="dlq")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@dlq.command("list")
def dlq_list(
    queue: Annotated[
        str | None,
        typer.Argument(
            help="matcher, notifier, deliveries, ingress or a queue name (default: all)"
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Show at most this many")] = None,
) -> None:
    """Show parked messages: queue, message id, type or routing key, age, size and reason
    (never the body)."""
    from services.dlq import UnknownQueue, list_parked

    try:
        parked = asyncio.run(list_parked(_settings(), [queue] if queue else None, limit=limit))
    except UnknownQueue as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    for m in parked:
        typer.echo(
            f"{m.queue}  {m.message_id or '-'}  {m.kind}  age={_age(m.age_seconds)}  "
            f"size={m.size}  reason={m.reason}"
        )
    typer.echo(f"{len(parked)} parked")


@dlq.command("replay")
def dlq_replay(
    queue: Annotated[str, typer.Argument(help="matcher, notifier, deliveries, ingress or a name")],
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most this many")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed")] = False,
) -> None:
    """Send parked messages back where they came from, each at most once (publish confirmed,
    then the parked copy acked)."""
    from services.dlq import UnknownQueue, replay

    try:
        report = asyncio.run(replay(_settings(), queue, limit=limit, dry_run=dry_run))
    except UnknownQueue as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    for m in report.messages:
        typer.echo(f"{m.message_id or '-'}  {m.kind}  reason={m.reason}")
    verb = "would replay" if report.dry_run else "replayed"
    typer.echo(
        f"{report.queue}: {verb} {report.replayed}, already done {report.already_done}, "
        f"left (no origin known) {report.left}"
    )


keys = typer.Typer(
    help="API keys of integrations, kept in the database as SHA-256 digests. Running services "
    "see a change within ROAC_API_KEYS_REFRESH_SECONDS (at once when the database announces it)."
)
app.add_typer(keys, name="keys")


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The integration's name (in events and metrics)")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="What the key may do, repeatable: events:write (default), contacts:erase, "
            "contacts:read, intros:read, intros:write, rounds:read, rounds:write, "
            "resources:read, resources:write, keys:admin",
        ),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="A source whose people the key may write, erase or read, repeatable "
            "(default: the key's name; '*': any source)",
        ),
    ] = None,
) -> None:
    """Create a key and print its secret: shown this once, never stored. A name holds at most
    two active keys (rotate one without downtime: `roac keys rotate NAME`)."""
    from shared.api_key_store import KeyNameTaken
    from shared.api_keys import create_key
    from shared.scopes import DEFAULT_SCOPES, parse_scopes, sources_from_cli

    try:
        scopes = parse_scopes(scope) if scope else DEFAULT_SCOPES
        sources = sources_from_cli(source or [], default=name)
        secret = _with_database(create_key(_settings().database_url, name, scopes, sources))
    except ValueError as exc:
        typer.echo(f"invalid key: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyNameTaken as exc:
        typer.echo(
            f"{name!r} already has two active keys: revoke one first "
            f"(roac keys revoke {name} --oldest)",
            err=True,
        )
        raise typer.Exit(1) from exc
    # The secret alone on stdout (KEY=$(roac keys create crm)); the advice on stderr.
    typer.echo(secret)
    where = "any source" if sources is None else "source(s) " + ", ".join(sorted(sources))
    typer.echo(
        f"created API key {name!r} with {', '.join(sorted(scopes))} for {where}; store the "
        "secret now, it is not shown again",
        err=True,
    )


@keys.command("rotate")
def keys_rotate(name: Annotated[str, typer.Argument(help="The active key's name")]) -> None:
    """Create a second key for NAME with the same scopes and sources and print its secret.
    Both work until `roac keys revoke NAME --oldest` once the integration uses the new one."""
    from shared.api_key_store import KeyNameTaken
    from shared.api_keys import rotate_key

    try:
        secret = _with_database(rotate_key(_settings().database_url, name))
    except LookupError as exc:
        typer.echo(f"no active key is named {name!r}", err=True)
        raise typer.Exit(1) from exc
    except KeyNameTaken as exc:
        typer.echo(f"{name!r} already has two active keys: revoke the oldest first", err=True)
        raise typer.Exit(1) from exc
    typer.echo(secret)
    typer.echo(
        f"second key for {name!r} created; once the integration uses it: "
        f"roac keys revoke {name} --oldest",
        err=True,
    )


@keys.command("list")
def keys_list() -> None:
    """Show every key: name, scopes, sources, created, last used (to within seconds), revoked.
    Never a secret."""
    from shared.api_keys import list_keys

    records = _with_database(list_keys(_settings().database_url))
    typer.echo(
        f"{'NAME':<24} {'SCOPES':<40} {'SOURCES':<16} {'CREATED':<20} {'LAST USED':<20} REVOKED"
    )
    for r in records:
        sources = "*" if r.sources is None else ",".join(r.sources)
        typer.echo(
            f"{r.name:<24} {','.join(r.scopes):<40} {sources:<16} {_when(r.created_at):<20} "
            f"{_when(r.last_used_at):<20} {_when(r.revoked_at)}"
        )
    active = sum(r.revoked_at is None for r in records)
    typer.echo(f"{active} active, {len(records) - active} revoked")


@keys.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The active key's name")],
    oldest: Annotated[
        bool, typer.Option("--oldest", help="Only the older of two active keys (rotation)")
    ] = False,
) -> None:
    """Revoke the active keys with this name (or the oldest); requests with them get 401 within
    seconds."""
    from shared.api_keys import revoke_key

    revoked = _with_database(revoke_key(_settings().database_url, name, oldest_only=oldest))
    if not revoked:
        typer.echo(f"no active key is named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {revoked} API key(s) named {name!r}")


contacts = typer.Typer(help="People as the matcher knows them: identities and merges.")
app.add_typer(contacts, name="contacts")


@contacts.command("show")
def contacts_show(
    source: Annotated[str, typer.Argument(help="The integration's source name")],
    external_id: Annotated[str, typer.Argument(help="The person's id in that source")],
) -> None:
    """List the identities of this person's contact and the merges that joined them."""
    from services.matcher.contacts_admin import show

    view = _with_database(show(_settings(), (source, external_id)))
    if view is None:
        typer.echo(f"no identity {source}/{external_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"contact {view.contact_id}")
    for identity in view.identities:
        typer.echo(f"  identity {identity.source}/{identity.external_id}")
    for merge in view.merges:
        typer.echo(
            f"  merge {merge.id}  {_when(merge.merged_at)}  on {merge.matched_on}, "
            f"brought {len(merge.identity_ids)} identity(ies)"
        )


@contacts.command("unmerge")
def contacts_unmerge(
    source: Annotated[str, typer.Argument(help="The integration's source name")],
    external_id: Annotated[str, typer.Argument(help="The person's id in that source")],
    merge: Annotated[
        str | None, typer.Option(help="The merge to undo, when the contact has several")
    ] = None,
) -> None:
    """Undo the merge that joined this identity to another: both people come back with their
    own identities, interests, introductions and profiles, and are never merged again."""
    from uuid import UUID

    from services.matcher.contacts_admin import unmerge
    from services.matcher.identity_resolution import UnmergeRefused

    try:
        merge_id = UUID(merge) if merge else None
    except ValueError as exc:
        typer.echo(f"--merge is a merge id (roac contacts show): {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        data = _with_database(unmerge(_settings(), (source, external_id), merge_id))
    except UnmergeRefused as exc:
        typer.echo(f"cannot unmerge {source}/{external_id}: {exc}", err=True)
        raise typer.Exit(1) from exc
    restored = ", ".join(f"{r.source}/{r.external_id}" for r in data.restored)
    remaining = ", ".join(f"{r.source}/{r.external_id}" for r in data.remaining)
    typer.echo(f"undid merge {data.merge_id}: {restored} | {remaining}")


def _with_database(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncpg

    try:
        return asyncio.run(coroutine)
    except asyncpg.UndefinedTableError as exc:
        typer.echo("tables missing in this database: run `roac migrate` first", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"PostgreSQL (ROAC_DATABASE_URL) is unreachable: {exc}", err=True)
        raise typer.Exit(2) from exc


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
