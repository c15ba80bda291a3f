import itertools
import random
from collections.abc import Sequence

import pytest

from services.matcher.assignment import Assignment, assign, maximum_matching

Edge = tuple[int, int, float]


def _random_graph(
    people: int, degree: float, seed: int, weights: Sequence[float] = ()
) -> list[Edge]:
    rng = random.Random(seed)
    edges: dict[tuple[int, int], float] = {}
    for _ in range(int(people * degree / 2)):
        a, b = rng.randrange(people), rng.randrange(people)
        if a != b:
            w = rng.choice(weights) if weights else round(rng.uniform(0.1, 10.0), 3)
            edges[(min(a, b), max(a, b))] = w
    return [(a, b, w) for (a, b), w in sorted(edges.items())]


def _check_partition(result: Assignment, people: Sequence[int]) -> list[int]:
    """Every person at most once, in a group or unplaced; groups sorted; returns all members."""
    members = [p for group in result.groups for p in group]
    assert len(members) == len(set(members))
    assert set(members).isdisjoint(result.unplaced)
    assert sorted(members + list(result.unplaced)) == sorted(set(people))
    assert all(list(group) == sorted(group) for group in result.groups)
    assert [g[0] for g in result.groups] == sorted(g[0] for g in result.groups)
    assert list(result.unplaced) == sorted(result.unplaced)
    return members


def _score(groups: Sequence[Sequence[int]], edges: Sequence[Edge]) -> float:
    weight = {(min(a, b), max(a, b)): w for a, b, w in edges}
    return sum(
        weight.get((a, b), 0.0) for group in groups for a, b in itertools.combinations(group, 2)
    )


def _best_matching(people: int, edges: Sequence[Edge]) -> tuple[int, float]:
    """Brute force: (most pairs, largest weight among those) over all matchings."""
    neighbours: dict[int, list[tuple[int, float]]] = {v: [] for v in range(people)}
    for a, b, w in edges:
        neighbours[a].append((b, w))
        neighbours[b].append((a, w))

    def best(free: frozenset[int]) -> tuple[int, float]:
        if not free:
            return 0, 0.0
        v = min(free)
        rest = free - {v}
        result = best(rest)
        for u, w in neighbours[v]:
            if u in rest:
                pairs, weight = best(rest - {u})
                result = max(result, (pairs + 1, weight + w))
        return result

    return best(frozenset(range(people)))


def test_every_person_is_placed_at_most_once_in_groups_of_the_right_size() -> None:
    people = list(range(300))
    edges = _random_graph(300, 6, seed=3)
    for size in range(2, 7):
        result = assign(people, edges, group_size=size)
        _check_partition(result, people)
        # Pairs take the odd one out as a third (odd_one_out); larger groups never grow.
        assert all(2 <= len(g) <= max(size, 3) for g in result.groups)
        assert result.total_score == pytest.approx(_score(result.groups, edges))


def test_a_path_where_greedy_strands_two_people_is_matched_perfectly() -> None:
    # Greedy takes b-c (weight 2) and leaves a and d alone; a-b + c-d places everyone.
    result = assign([1, 2, 3, 4], [(1, 2, 1.0), (2, 3, 2.0), (3, 4, 1.0)])
    assert result.groups == ((1, 2), (3, 4))
    assert result.unplaced == ()
    assert result.total_score == 2.0


def test_everyone_is_paired_where_a_perfect_matching_exists() -> None:
    # A long path with heavier middle edges: greedy leaves people out, a perfect matching exists.
    people = list(range(40))
    edges = [(i, i + 1, 1.0 + (i % 2)) for i in range(39)]
    result = assign(people, edges, odd_one_out=False)
    assert len(result.groups) == 20
    assert result.unplaced == ()


def test_an_odd_count_gives_exactly_one_group_of_three() -> None:
    people = list(range(7))
    edges = [(a, b, 1.0 + (a * b) % 3) for a, b in itertools.combinations(people, 2)]
    result = assign(people, edges)
    _check_partition(result, people)
    assert sorted(len(g) for g in result.groups) == [2, 2, 3]
    assert result.unplaced == ()


def test_the_odd_one_out_joins_the_pair_it_adds_most_to() -> None:
    edges = [(1, 2, 5.0), (3, 4, 5.0), (5, 1, 1.0), (5, 3, 2.0), (5, 4, 0.5)]
    result = assign([1, 2, 3, 4, 5], edges)
    assert result.groups == ((1, 2), (3, 4, 5))
    assert result.total_score == pytest.approx(12.5)


def test_a_third_never_joins_a_pair_with_someone_forbidden() -> None:
    edges = [(1, 2, 3.0), (3, 1, 1.0)]
    assert assign([1, 2, 3], edges).groups == ((1, 2, 3),)

    result = assign([1, 2, 3], edges, forbidden=lambda a, b: {a, b} == {2, 3})
    assert result.groups == ((1, 2),)
    assert result.unplaced == (3,)

    # With an edge between them, the pair is allowed whatever `forbidden` says.
    result = assign([1, 2, 3], [*edges, (2, 3, 0.5)], forbidden=lambda a, b: True)
    assert result.groups == ((1, 2, 3),)


def test_a_person_without_edges_is_unplaced() -> None:
    result = assign([1, 2, 3, 9], [(1, 2, 1.0), (2, 3, 1.0), (9, 9, 4.0), (1, 77, 3.0)])
    assert 9 in result.unplaced
    for size in (3, 4):
        assert 9 in assign([1, 2, 3, 9], [(1, 2, 1.0), (2, 3, 1.0)], group_size=size).unplaced


def test_duplicate_edges_keep_the_largest_weight() -> None:
    result = assign([1, 2], [(1, 2, 1.0), (2, 1, 3.0), (1, 2, 2.0), (1, 2, -5.0)])
    assert result.groups == ((1, 2),)
    assert result.total_score == 3.0


def test_the_same_inputs_in_any_order_give_the_same_assignment() -> None:
    people = list(range(0, 2000, 7))
    edges = [(people[a], people[b], w) for a, b, w in _random_graph(len(people), 8, seed=5)]
    rng = random.Random(11)
    for size, serendipity in ((2, 0.0), (2, 0.7), (3, 0.0), (5, 0.3)):
        expected = assign(people, edges, group_size=size, serendipity=serendipity, seed=4)
        for _ in range(3):
            shuffled_people = people[:]
            rng.shuffle(shuffled_people)
            shuffled = [(b, a, w) if rng.random() < 0.5 else (a, b, w) for a, b, w in edges]
            shuffled += rng.sample(shuffled, 20)  # duplicates change nothing
            rng.shuffle(shuffled)
            again = assign(
                shuffled_people, shuffled, group_size=size, serendipity=serendipity, seed=4
            )
            assert again == expected


def test_without_serendipity_small_graphs_get_the_optimal_matching() -> None:
    for seed in range(150):
        rng = random.Random(seed)
        people = rng.randint(2, 10)
        density = rng.choice([0.2, 0.35, 0.5, 0.8])
        edges = [
            (a, b, rng.choice([1.0, 2.0, round(rng.uniform(0.1, 5), 3)]))
            for a, b in itertools.combinations(range(people), 2)
            if rng.random() < density
        ]
        pairs, weight = _best_matching(people, edges)
        result = assign(list(range(people)), edges, odd_one_out=False)
        assert len(result.groups) == pairs, seed
        assert result.total_score == pytest.approx(weight), seed


def test_the_matching_always_has_the_most_pairs_possible() -> None:
    nx = pytest.importorskip("networkx")
    for seed in range(40):
        rng = random.Random(seed)
        people = rng.randint(20, 150)
        edges = _random_graph(people, rng.choice([1.5, 2.5, 4.0]), seed, weights=(1.0, 2.0, 7.5))
        graph: list[dict[int, float]] = [{} for _ in range(people)]
        for a, b, w in edges:
            graph[a][b] = graph[b][a] = w
        mate = maximum_matching(graph)
        assert all(
            mate[v] < 0 or (mate[mate[v]] == v and mate[v] in graph[v]) for v in range(people)
        )
        g = nx.Graph()
        g.add_weighted_edges_from(edges)
        best = nx.max_weight_matching(g, maxcardinality=True)
        assert sum(m >= 0 for m in mate) == 2 * len(best), seed


def test_a_sparse_graph_gets_at_least_99_percent_of_the_optimum() -> None:
    # networkx's exact blossom is O(n^3): 400 people keep this fast; bench/assignment_quality.py
    # compares 1,000 and 5,000 people.
    nx = pytest.importorskip("networkx")
    for seed in (1,):
        edges = _random_graph(400, 8, seed)
        g = nx.Graph()
        g.add_weighted_edges_from(edges)
        best = nx.max_weight_matching(g, maxcardinality=True)
        optimum = sum(g[a][b]["weight"] for a, b in best)
        result = assign(list(range(400)), edges, odd_one_out=False)
        assert len(result.groups) == len(best)
        assert result.total_score >= 0.99 * optimum


def test_serendipity_varies_with_the_seed_and_repeats_with_the_same_seed() -> None:
    people = list(range(200))
    edges = _random_graph(200, 10, seed=8)
    first = assign(people, edges, serendipity=1.0, seed=1)
    assert assign(people, edges, serendipity=1.0, seed=1) == first
    others = {assign(people, edges, serendipity=1.0, seed=s).groups for s in range(2, 6)}
    assert any(groups != first.groups for groups in others)
    plain = assign(people, edges)
    assert plain.total_score >= first.total_score  # the score is always the original weights
    assert first.total_score == pytest.approx(_score(first.groups, edges))


def test_groups_of_three_and_four_on_a_complete_graph() -> None:
    rng = random.Random(2)
    people = list(range(24))
    edges = [(a, b, rng.uniform(1, 2)) for a, b in itertools.combinations(people, 2)]
    for size in (3, 4):
        result = assign(people, edges, group_size=size)
        _check_partition(result, people)
        assert [len(g) for g in result.groups] == [size] * (24 // size)
        assert result.unplaced == ()


def test_leftovers_of_larger_groups_pair_up_and_never_overfill_a_group() -> None:
    rng = random.Random(4)
    people = list(range(26))
    edges = [(a, b, rng.uniform(1, 2)) for a, b in itertools.combinations(people, 2)]
    result = assign(people, edges, group_size=4)  # 26 = 6 * 4 + 2
    _check_partition(result, people)
    assert result.unplaced == ()
    assert sorted(len(g) for g in result.groups) == [2, 4, 4, 4, 4, 4, 4]

    # One left over pairs with a member of a full group, which keeps the rest: 13 = 6 + 5 + 2.
    people = list(range(13))
    edges = [(a, b, rng.uniform(1, 2)) for a, b in itertools.combinations(people, 2)]
    result = assign(people, edges, group_size=6)
    _check_partition(result, people)
    assert result.unplaced == ()
    assert sorted(len(g) for g in result.groups) == [2, 5, 6]

    # Two people who reach no full group form a smaller group of their own.
    edges = [(a, b, 1.0) for a, b in itertools.combinations(range(8), 2)] + [(8, 9, 1.0)]
    result = assign(list(range(10)), edges, group_size=4)
    assert result.groups == ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9))


@pytest.mark.parametrize("people", [13, 19, 25])
def test_no_group_ever_exceeds_its_size(people: int) -> None:
    """Groups of 6 with 13, 19 and 25 people (one left over after full groups), and every other
    size, on random graphs of every density: never a group above group_size (pairs: a third at
    most, the odd one out), never a group of one, and a person with an edge into a full group
    is placed or has every neighbour in a group that cannot give anyone away."""
    ids = list(range(people))
    complete = [(a, b, 1.0 + (a * 7 + b) % 5) for a, b in itertools.combinations(ids, 2)]
    graphs = [complete] + [
        _random_graph(people, degree, seed=seed)
        for degree in (1.0, 2.0, 4.0, 8.0)
        for seed in range(25)
    ]
    for size in range(2, 7):
        limit = 3 if size == 2 else size
        for edges in graphs:
            for serendipity in (0.0, 0.5):
                result = assign(ids, edges, group_size=size, serendipity=serendipity, seed=3)
                _check_partition(result, ids)
                assert all(2 <= len(g) <= limit for g in result.groups), (size, result.groups)
    for edges in graphs:
        pairs_only = assign(ids, edges, group_size=2, odd_one_out=False)
        assert all(len(g) == 2 for g in pairs_only.groups)
    for size in range(2, 7):
        # On the complete graph everyone is placed.
        assert assign(ids, complete, group_size=size).unplaced == ()


def test_groups_respect_forbidden_pairs_without_an_edge() -> None:
    people = list(range(12))
    edges = [(a, (a + 1) % 12, 1.0) for a in people] + [(a, (a + 2) % 12, 0.5) for a in people]
    weight = {(min(a, b), max(a, b)) for a, b, _ in edges}

    def forbidden(a: int, b: int) -> bool:
        return (a + b) % 3 == 0

    for size in (2, 3, 4, 5):
        result = assign(people, edges, group_size=size, forbidden=forbidden)
        _check_partition(result, people)
        for group in result.groups:
            for a, b in itertools.combinations(group, 2):
                assert (a, b) in weight or not forbidden(a, b)


def test_priority_decides_who_is_left_out_on_a_tie() -> None:
    # A star: only one of the three leaves can be paired with the centre, all weights equal.
    edges = [(0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0)]
    for favourite in (1, 2, 3):
        result = assign([0, 1, 2, 3], edges, priority={favourite: 5.0}, odd_one_out=False)
        assert result.groups == ((0, favourite),)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="group_size"):
        assign([1, 2], [], group_size=7)
    with pytest.raises(ValueError, match="serendipity"):
        assign([1, 2], [], serendipity=-1)
    assert assign([], []) == Assignment((), (), 0.0)
