import math

import pytest

from services.matcher.scoring import (
    Interest,
    TopicStats,
    choose_partner,
    explain,
    pair_key,
    rarity,
    score_pair,
)
from shared.events import InterestKind, TopicRelation

LIKES, SEEKS, OFFERS = InterestKind.LIKES, InterestKind.SEEKS, InterestKind.OFFERS
TOPICS = {
    1: TopicStats("kite aerial photography", people=2),
    2: TopicStats("community management", people=90),
    3: TopicStats("social media compliance", people=4),
}


def test_a_rare_topic_counts_more_than_one_everybody_has() -> None:
    assert rarity(2, 100) > rarity(50, 100) > rarity(100, 100)
    assert rarity(100, 100) == pytest.approx(math.log(2))
    assert rarity(0, 0) > 0  # no division by zero on an empty store


def test_shared_likes_score_by_rarity_and_weights() -> None:
    a = [Interest(1, LIKES, 1.0), Interest(2, LIKES, 2.0)]
    b = [Interest(1, LIKES, 1.0), Interest(2, LIKES, 0.5)]
    pair = score_pair(a, b, TOPICS, population=100)
    assert pair is not None
    expected = rarity(2, 100) + rarity(90, 100) * 2.0 * 0.5
    assert pair.score == pytest.approx(expected)
    assert [m.topic_id for m in pair.topics] == [1, 2]  # strongest first
    assert all(m.relation is TopicRelation.SHARED for m in pair.topics)


def test_seekers_meet_offerers_in_both_directions() -> None:
    seeker, offerer = [Interest(3, SEEKS, 1.0)], [Interest(3, OFFERS, 1.0)]
    forward = score_pair(seeker, offerer, TOPICS, 100)
    backward = score_pair(offerer, seeker, TOPICS, 100)
    assert forward is not None and backward is not None
    assert forward.topics[0].relation is TopicRelation.SEEKS_OFFERS
    assert forward.topics[0].first_seeks is True
    assert backward.topics[0].first_seeks is False
    assert forward.score == pytest.approx(backward.score)


@pytest.mark.parametrize(
    ("a", "b"), [(SEEKS, SEEKS), (OFFERS, OFFERS), (LIKES, SEEKS), (OFFERS, LIKES)]
)
def test_incompatible_kinds_do_not_match(a: InterestKind, b: InterestKind) -> None:
    assert score_pair([Interest(3, a, 1.0)], [Interest(3, b, 1.0)], TOPICS, 100) is None


def test_nothing_in_common_is_no_match() -> None:
    assert score_pair([Interest(1, LIKES, 1.0)], [Interest(2, LIKES, 1.0)], TOPICS, 100) is None


def test_choose_partner_picks_the_best_above_threshold_and_skips_excluded() -> None:
    me = [Interest(1, LIKES, 1.0), Interest(2, LIKES, 1.0)]
    candidates = {
        10: [Interest(2, LIKES, 1.0)],  # common topic only
        11: [Interest(1, LIKES, 1.0)],  # rare topic
        12: [Interest(1, LIKES, 1.0), Interest(2, LIKES, 1.0)],  # both
    }
    best = choose_partner(me, candidates, TOPICS, 100, excluded=set(), min_score=0.0)
    assert best is not None and best.partner_id == 12
    best = choose_partner(me, candidates, TOPICS, 100, excluded={12}, min_score=0.0)
    assert best is not None and best.partner_id == 11
    assert choose_partner(me, candidates, TOPICS, 100, excluded={12}, min_score=10.0) is None


def test_choose_partner_breaks_ties_by_lowest_id() -> None:
    me = [Interest(1, LIKES, 1.0)]
    candidates = {7: [Interest(1, LIKES, 1.0)], 3: [Interest(1, LIKES, 1.0)]}
    best = choose_partner(me, candidates, TOPICS, 100, excluded=set(), min_score=0)
    assert best is not None and best.partner_id == 3


def test_pair_key_ignores_order_and_repeats() -> None:
    assert pair_key(5, 3) == pair_key(3, 5) == "3:5"
    assert pair_key(3, 3, 5) == "3:5"


def test_explanations_name_the_topics() -> None:
    shared = score_pair([Interest(1, LIKES, 1.0)], [Interest(1, LIKES, 1.0)], TOPICS, 100)
    helping = score_pair([Interest(3, SEEKS, 1.0)], [Interest(3, OFFERS, 1.0)], TOPICS, 100)
    assert shared is not None and helping is not None
    assert explain(shared, TOPICS) == "You both care about kite aerial photography."
    assert explain(helping, TOPICS) == (
        "One is looking for help with social media compliance and the other offers it."
    )
