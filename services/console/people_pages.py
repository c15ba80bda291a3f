"""The console's People pages: search by name, email, source id, tag or topic; a person's page
(channels, identities and merges, interests, block list, introductions with everyone's
answers); and the actions on a person, each behind a confirmation page naming what it will do
(`/person/confirm`), then done through the services' APIs and recorded in the audit list
(`/person/act`):

- pause for 30 days and resume: set as the person's own choice, on their behalf (ingest's
  `POST /v1/contacts/{source}/{id}/preferences` with `paused_until`), so the integration's
  next upsert of them, which carries no `snoozed_until`, does not end it; their preferences
  page shows it; opt out and erase (ingest);
- block a pairing: the two are never introduced to each other again (the matcher's
  `POST /v1/contacts/{source}/{id}/blocks`);
- unmerge: undo one merge listed on the page (the matcher's `POST .../unmerge`, what
  `roac contacts unmerge` does)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.console.audit_people import ERASED, person_of
from services.console.clients import ApiError, Apis
from services.console.web import (
    FormRefused,
    Signed,
    audit,
    checked_form,
    console,
    correlation,
    redirect,
    render,
)

people_pages = APIRouter(include_in_schema=False)
PAUSE_DAYS = 30
ACTION_PATTERN = "^(pause|resume|opt-out|erase|block|unmerge)$"


@people_pages.get("/people")
async def people_page(
    request: Request,
    session: Signed,
    q: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    page = await console(request).apis.search_people(q, str(after) if after else None)
    next_url = None
    if page.get("next_after"):
        next_url = "/people?" + urlencode({"q": q, "after": page["next_after"]})
    return render(
        request,
        "people.html.j2",
        session,
        title="People",
        section="people",
        q=q,
        people=page["people"],
        next_url=next_url,
    )


@people_pages.get("/person")
async def person_page(
    request: Request,
    session: Signed,
    source: Annotated[str, Query(max_length=64)],
    id: Annotated[str, Query(max_length=256)],
) -> Response:
    apis = console(request).apis
    profile, identity, intros = await asyncio.gather(
        apis.profile(source, id), apis.identity(source, id), apis.person_intros(source, id)
    )
    paused = bool(
        profile.get("snoozed_until")
        and datetime.fromisoformat(profile["snoozed_until"]) > datetime.now(UTC)
    )
    return render(
        request,
        "person.html.j2",
        session,
        title=profile.get("name") or f"{source}/{id}",
        section="people",
        source=source,
        external_id=id,
        profile=profile,
        identity=identity,
        intros=intros,
        paused=paused,
    )


ACTIONS_ON_PEOPLE = {
    "pause": (
        "Pause",
        "Paused until {until}, kept whatever the integration sends: no new introduction until "
        "then (rounds and live matching leave the person out, as paused), even when the "
        "integration's next upsert of them carries no snoozed_until. Set on their behalf as "
        "their own choice, which their preferences page shows. Introductions already under way "
        "go on.",
    ),
    "resume": (
        "Resume",
        "The person's pause ends now (one set here or chosen on their preferences page) and "
        "they can be introduced again; a snooze the integration itself sends "
        "(snoozed_until) still holds until its day.",
    ),
    "opt-out": (
        "Opt out",
        "The person gets no more asks, introductions or resources, as if they had clicked "
        "unsubscribe; what is pending for them is not sent.",
    ),
    "erase": (
        "Erase",
        "Everything that identifies the person is deleted or scrubbed in every service "
        "(identities, interests, profile, their seats in introductions, pending messages, and "
        "their name in this console's audit list); introductions under way that name them are "
        "cancelled. This cannot be undone.",
    ),
}


def pause_day(now: datetime) -> date:
    """The day a pause from the console ends (at its start, UTC): PAUSE_DAYS from now."""
    return (now + timedelta(days=PAUSE_DAYS)).date()


def pause_end(day: str, now: datetime) -> datetime | None:
    """When the confirmed pause ends: the start (UTC) of the day its confirmation named, if
    that is after now and within a year (PAUSE_DAYS is); None for anything else."""
    try:
        end = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
    except ValueError:
        return None
    return end if now < end <= now + timedelta(days=366) else None


def other_person(text: str) -> tuple[str, str] | None:
    """`source/id` as typed (a source holds no slash; an id may): the two parts, or None."""
    source, slash, external_id = text.strip().partition("/")
    if not slash or not source or not external_id.strip():
        return None
    return source.strip().lower(), external_id.strip()


@dataclass
class Confirmation:
    """What a confirmation page says and sends back: its title, what the action will do, the
    button's words, and the hidden fields beside the person and action."""

    title: str
    effect: str
    button: str
    fields: dict[str, str] = field(default_factory=dict)


async def _block_confirmation(
    apis: Apis, source: str, external_id: str, name: str, other: str
) -> Confirmation | None:
    found = other_person(other)
    if found is None:
        return None
    profile = await apis.profile(*found)
    other_name = profile.get("name") or f"{found[0]}/{found[1]}"
    return Confirmation(
        title=f"Block the pairing of {name} and {other_name}?",
        effect=(
            f"{name} ({source}/{external_id}) and {other_name} ({found[0]}/{found[1]}) will "
            "never be introduced to each other again: no round and no live match puts them in "
            "one group, as after one of them answers a check-in with “not for me”. "
            "Introductions already under way go on. The console cannot lift the block."
        ),
        button=f"Block {name} and {other_name}",
        fields={"other": f"{found[0]}/{found[1]}"},
    )


async def _unmerge_confirmation(
    apis: Apis, source: str, external_id: str, name: str, merge: UUID | None
) -> Confirmation | None:
    identity = await apis.identity(source, external_id)
    chosen = next(
        (
            m
            for m in identity.get("merges", [])
            if str(m.get("merge_id")) == str(merge) and not m.get("undone_at")
        ),
        None,
    )
    if chosen is None:
        return None
    brought = ", ".join(f"{i['source']}/{i['external_id']}" for i in chosen["identities"])
    return Confirmation(
        title=f"Undo a merge of {name}?",
        effect=(
            f"The merge of {str(chosen['merged_at'])[:10]} (a shared {chosen['matched_on']}) is "
            f"undone: {brought or 'the identities it brought'} become a person of their own "
            f"again, with their own identities, interests, introductions and profile, and are "
            f"never merged with {name} automatically again."
        ),
        button="Undo this merge",
        fields={"merge": str(merge)},
    )


@people_pages.get("/person/confirm")
async def confirm_page(
    request: Request,
    session: Signed,
    source: Annotated[str, Query(max_length=64)],
    id: Annotated[str, Query(max_length=256)],
    action: Annotated[str, Query(pattern=ACTION_PATTERN)],
    other: Annotated[str, Query(max_length=330)] = "",
    merge: UUID | None = None,
) -> Response:
    apis = console(request).apis
    profile = await apis.profile(source, id)
    name = profile.get("name") or f"{source}/{id}"
    confirmation: Confirmation | None
    if action == "block":
        confirmation = await _block_confirmation(apis, source, id, name, other)
        missing = "Give the other person as source/id (for example crm/1234)."
    elif action == "unmerge":
        confirmation = await _unmerge_confirmation(apis, source, id, name, merge)
        missing = "This merge is not one of the person's merges, or it was undone already."
    elif action == "pause":
        # The day is part of what is confirmed: the form carries it back to `_act`.
        label, effect = ACTIONS_ON_PEOPLE[action]
        until = pause_day(datetime.now(UTC)).isoformat()
        confirmation = Confirmation(
            f"{label} {name}?", effect.format(until=until), f"{label} {name}", {"until": until}
        )
    else:
        label, effect = ACTIONS_ON_PEOPLE[action]
        confirmation = Confirmation(f"{label} {name}?", effect, f"{label} {name}")
    if confirmation is None:
        return render(
            request,
            "message.html.j2",
            session,
            status=422,
            title="Nothing to confirm",
            message=missing,
        )
    return render(
        request,
        "confirm.html.j2",
        session,
        title=confirmation.title,
        section="people",
        source=source,
        external_id=id,
        action=action,
        effect=confirmation.effect,
        button=confirmation.button,
        fields=confirmation.fields,
    )


NOTICE_AFTER = {
    "pause": "paused",
    "resume": "resumed",
    "opt-out": "opted-out",
    "block": "blocked",
    "unmerge": "unmerged",
}


def people_of_action(source: str, external_id: str, action: str, form: dict[str, str]) -> list[str]:
    """Whom an action's audit row names whatever its outcome: the person, and the other person
    of a pairing to block."""
    other = other_person(form.get("other", "")) if action == "block" else None
    return [person_of(source, external_id)] + ([person_of(*other)] if other else [])


@dataclass(frozen=True)
class Done:
    """What the audit row of a done action adds: its detail, and the people it names beyond
    the person acted on (the other of a blocked pairing, those an unmerge set apart)."""

    detail: str
    others: list[str] = field(default_factory=list)


async def _act(
    apis: Apis, action: str, source: str, external_id: str, form: dict[str, str], corr: str
) -> Done:
    """Do the confirmed action through the services' APIs; what the audit row adds."""
    if action == "pause":
        until = pause_end(form.get("until", ""), datetime.now(UTC))
        if until is None:
            raise FormRefused("Nothing was done: the pause's end is missing or past.")
        await apis.change_preferences(
            source, external_id, {"paused_until": until.isoformat()}, corr
        )
        return Done(f"paused until {until.date().isoformat()}; {corr}")
    if action == "resume":
        await apis.change_preferences(source, external_id, {"paused_until": None}, corr)
    elif action == "opt-out":
        await apis.opt_out(source, external_id, corr)
    elif action == "erase":
        await apis.erase(source, external_id, corr)
    elif action == "block":
        other = other_person(form.get("other", ""))
        if other is None:
            raise FormRefused("Nothing was done: the other person is missing.")
        await apis.block_pair(source, external_id, other, corr)
        return Done(f"never with person {person_of(*other)}; {corr}", [person_of(*other)])
    else:
        try:
            merge = UUID(form.get("merge", ""))
        except ValueError:
            raise FormRefused("Nothing was done: no merge was named.") from None
        undone = await apis.unmerge(source, external_id, merge, corr)
        restored = [person_of(r["source"], r["external_id"]) for r in undone["restored"]]
        apart = ", ".join(f"person {p}" for p in restored)
        return Done(f"merge {merge} undone: {apart} apart again; {corr}", restored)
    return Done(corr)


@people_pages.post("/person/act")
async def act_on_person(request: Request, session: Signed) -> Response:
    form = await checked_form(request, session)
    source, external_id, action = form.get("source", ""), form.get("id", ""), form.get("action")
    known = action in ACTIONS_ON_PEOPLE or action in ("block", "unmerge")
    if not known or action is None or form.get("confirmed") != "yes":
        raise FormRefused("Nothing was done: the action was not confirmed.")
    c = console(request)
    target = f"person {person_of(source, external_id)}"
    audited = "block pairing" if action == "block" else action
    named = people_of_action(source, external_id, action, form)
    try:
        done = await _act(c.apis, action, source, external_id, form, correlation(action))
    except ApiError as exc:
        await audit(request, session, audited, target, "failed", exc.detail, named)
        if exc.status not in (409, 422):
            raise
        # Refused by the service (nothing to undo, the same person twice): said as it is.
        return render(
            request,
            "message.html.j2",
            session,
            status=409,
            title="Nothing was done",
            message=f"The {exc.service} refused: {exc.detail}",
        )
    if action == "erase":
        # The audit list keeps that someone was erased, never who.
        await c.accounts.forget_person(person_of(source, external_id))
        await audit(request, session, "erase", ERASED, "ok", done.detail)
        return redirect("/people?notice=erased")
    await audit(request, session, audited, target, "ok", done.detail, named + done.others)
    notice = NOTICE_AFTER[action]
    return redirect("/person?" + urlencode({"source": source, "id": external_id, "notice": notice}))
