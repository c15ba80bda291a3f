from uuid import uuid4

from services.notifier.optin import Answer, IntroState, Role, accept, decline, expire, start
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactRef,
    IntroData,
    IntroTopic,
    Participant,
    TopicRelation,
)


def _intro(help_topic: bool = False, people: int = 2) -> IntroData:
    ps = [
        Participant(
            source="s",
            external_id=str(i),
            name=f"P{i}",
            channels=[ChannelAddress(type=ChannelType.EMAIL, address=f"p{i}@example.org")],
        )
        for i in range(people)
    ]
    topic = (
        IntroTopic(
            topic="t",
            relation=TopicRelation.SEEKS_OFFERS,
            seeker=ContactRef(source="s", external_id="1"),
            offerer=ContactRef(source="s", external_id="0"),
        )
        if help_topic
        else IntroTopic(topic="t", relation=TopicRelation.SHARED)
    )
    return IntroData(proposal_id=uuid4(), participants=ps, topics=[topic], score=1, reason="r")


def test_direct_mode_introduces_at_once() -> None:
    step = start(_intro(), double_opt_in=False)
    assert step.state is IntroState.ACCEPTED and step.introduce == (0, 1) and step.ask == ()


def test_peers_are_asked_together_and_introduced_when_all_said_yes() -> None:
    step = start(_intro(people=3), double_opt_in=True)
    assert step.state is IntroState.ASKED and step.ask == (0, 1, 2)
    step = accept(step.state, step.seats, 1)
    assert step.state is IntroState.ASKED and step.introduce == () and step.ask == ()
    again = accept(step.state, step.seats, 1)
    assert not again.changed  # a second click changes nothing
    step = accept(step.state, step.seats, 0)
    step = accept(step.state, step.seats, 2)
    assert step.state is IntroState.ACCEPTED and step.introduce == (0, 1, 2)


def test_the_seeker_is_asked_first_and_the_helper_only_after_a_yes() -> None:
    step = start(_intro(help_topic=True), double_opt_in=True)
    roles = {s.position: s.role for s in step.seats}
    assert roles == {0: Role.HELPER, 1: Role.SEEKER}
    assert step.ask == (1,) and step.seats[0].answer is Answer.WAITING
    # The helper cannot answer before being asked.
    assert not accept(step.state, step.seats, 0).changed
    step = accept(step.state, step.seats, 1)
    assert step.ask == (0,) and step.state is IntroState.ASKED
    step = accept(step.state, step.seats, 0)
    assert step.state is IntroState.ACCEPTED and step.introduce == (0, 1)


def test_a_decline_ends_it_and_later_answers_change_nothing() -> None:
    step = start(_intro(), double_opt_in=True)
    step = accept(step.state, step.seats, 0)
    step = decline(step.state, step.seats, 1)
    assert step.state is IntroState.DECLINED and step.ask == () and step.introduce == ()
    assert not accept(step.state, step.seats, 1).changed
    assert not decline(step.state, step.seats, 1).changed


def test_a_waiting_helper_may_decline_only_once_asked_but_expiry_closes_everything() -> None:
    step = start(_intro(help_topic=True), double_opt_in=True)
    step = expire(step.state, step.seats)
    assert step.state is IntroState.EXPIRED
    assert {s.answer for s in step.seats} == {Answer.EXPIRED}
    assert not expire(step.state, step.seats).changed
