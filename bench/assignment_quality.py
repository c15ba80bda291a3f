"""How good and how fast a round's pairing is (`services.matcher.assignment.assign`).

On a synthetic candidate graph shaped like the real one, compares for each size:
(a) plain greedy (heaviest edge first), (b) `assign` with group_size 2, and (c) networkx's exact
`max_weight_matching(maxcardinality=True)` (Edmonds' weighted blossom, O(n^3): slow, skipped
above --skip-exact-above people). Reports time, total weight, people placed in pairs, the ratio
assign / optimum and whether everyone the optimum places was placed; then times `assign` alone
on 100,000 people.

The graph: people belong to hidden communities (sizes 5 to ~400, heavy-tailed). Each person
declares 2 to 8 interests, mostly from their community's few topics, some from a global pool
whose popularity is Zipf-distributed; a few people declare nothing (isolated). A pair's score is
the matcher's: the sum over shared topics of rarity x weight x weight, rarity = ln(1 + people /
people with the topic). Each person keeps their top `degree` candidates (among a sample of the
people sharing each of their topics); the candidate graph is the union of those lists, so a
person has `degree` to a few dozen edges. The weights are for pairs only (no constraints).

"in pairs" counts people placed in pairs (assign's odd-one-out triples are turned off for the
comparison, `odd_one_out=False`); "everyone placeable placed" says whether assign placed as many
people in pairs as the exact maximum-cardinality matching does. One extra configuration at the
smallest size keeps only people with an edge, an even number of them, so that a perfect
matching can exist (the bench prints whether one does).

    .venv/bin/python bench/assignment_quality.py [--sizes 1000 5000] [--degree 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.matcher.assignment import assign

Edge = tuple[int, int, float]

GLOBAL_TOPICS = 3_000
LARGE = 100_000


def candidate_graph(people: int, degree: int, seed: int, isolated: float = 0.003) -> list[Edge]:
    """Top-`degree` candidate lists of people in hidden communities, as undirected edges."""
    rng = random.Random(seed)
    cumulative = list(accumulate(1 / rank for rank in range(1, GLOBAL_TOPICS + 1)))
    interests: list[dict[int, float]] = []
    next_topic = GLOBAL_TOPICS
    while len(interests) < people:
        size = min(int(5 + rng.paretovariate(1.3) * 10), 400, people - len(interests))
        pool = list(range(next_topic, next_topic + rng.randint(3, 12)))
        next_topic += len(pool)
        for _ in range(size):
            mine: dict[int, float] = {}
            if rng.random() >= isolated:
                for _ in range(rng.randint(2, 8)):
                    if rng.random() < 0.7:
                        topic = rng.choice(pool)
                    else:
                        topic = rng.choices(range(GLOBAL_TOPICS), cum_weights=cumulative)[0]
                    mine[topic] = rng.uniform(0.5, 1.5)
            interests.append(mine)
    rng.shuffle(interests)

    holders: dict[int, list[int]] = {}
    for person, mine in enumerate(interests):
        for topic in mine:
            holders.setdefault(topic, []).append(person)
    rarity = {t: math.log1p(people / len(h)) for t, h in holders.items()}

    best: dict[tuple[int, int], float] = {}
    for person, mine in enumerate(interests):
        sample: set[int] = set()
        for topic in mine:
            others = holders[topic]
            sample.update(others if len(others) <= 12 else rng.sample(others, 12))
        sample.discard(person)
        scored = []
        for other in sorted(sample):
            theirs = interests[other]
            score = sum(rarity[t] * w * theirs[t] for t, w in mine.items() if t in theirs)
            scored.append((score, other))
        scored.sort(reverse=True)
        for score, other in scored[:degree]:
            best[(min(person, other), max(person, other))] = round(score, 6)
    return [(a, b, w) for (a, b), w in sorted(best.items())]


def greedy_matching(edges: list[Edge]) -> tuple[float, int]:
    """Heaviest edge first while both ends are free: (total weight, people placed)."""
    matched: set[int] = set()
    total = 0.0
    for a, b, w in sorted(edges, key=lambda e: e[2], reverse=True):
        if a not in matched and b not in matched:
            matched.update((a, b))
            total += w
    return total, len(matched)


def exact_matching(people: list[int], edges: list[Edge]) -> tuple[float, int]:
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(people)
    graph.add_weighted_edges_from(edges)
    matching = nx.max_weight_matching(graph, maxcardinality=True)
    return sum(graph[a][b]["weight"] for a, b in matching), 2 * len(matching)


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def measure(
    people: int, degree: int, seed: int, *, exact: bool, isolated: float = 0.003
) -> dict[str, float]:
    """One configuration; with isolated=0, only people with an edge, an even number of them."""
    edges = candidate_graph(people, degree, seed, isolated)
    ids = list(range(people))
    if isolated == 0:
        ids = sorted({v for a, b, _ in edges for v in (a, b)})
        if len(ids) % 2:
            dropped = ids.pop()
            edges = [e for e in edges if dropped not in e[:2]]
    connected = len({v for a, b, _ in edges for v in (a, b)})
    row: dict[str, float] = {
        "people": len(ids),
        "edges": len(edges),
        "connected": connected,
        "isolated": isolated,
    }
    (row["greedy_weight"], row["greedy_placed"]), row["greedy_s"] = _timed(greedy_matching, edges)
    result, row["assign_s"] = _timed(assign, ids, edges, odd_one_out=False)
    row["assign_weight"] = result.total_score
    row["assign_placed"] = 2 * len(result.groups)
    with_triples = assign(ids, edges)
    row["assign_placed_with_triples"] = len(ids) - len(with_triples.unplaced)
    if exact:
        (row["exact_weight"], row["exact_placed"]), row["exact_s"] = _timed(
            exact_matching, ids, edges
        )
        row["ratio"] = row["assign_weight"] / row["exact_weight"]
        row["greedy_ratio"] = row["greedy_weight"] / row["exact_weight"]
        row["placed_all"] = float(row["assign_placed"] >= row["exact_placed"])
        row["perfect"] = float(row["exact_placed"] == len(ids))
    return row


def run(
    sizes: list[int],
    degree: int = 10,
    seed: int = 1,
    skip_exact_above: int = 5_000,
    large: int | None = LARGE,
) -> list[dict[str, float]]:
    """One row per configuration: each size, one without isolated people, and `large`."""
    configs = [(size, 0.003, size <= skip_exact_above) for size in sizes]
    smallest = min(sizes, default=1_000)
    configs.append((smallest, 0.0, smallest <= skip_exact_above))
    if large:
        configs.append((large, 0.003, large <= skip_exact_above))
    rows = []
    for people, isolated, exact in configs:
        row = measure(people, degree, seed, exact=exact, isolated=isolated)
        _print_row(row)
        rows.append(row)
    return rows


def _print_row(row: dict[str, float]) -> None:
    people, edges = int(row["people"]), int(row["edges"])
    print(
        f"{people:,} people ({int(row['connected']):,} with an edge, isolated fraction "
        f"{row['isolated']:g}), {edges:,} edges",
        flush=True,
    )
    print(
        f"  greedy: {row['greedy_s']:7.2f} s  weight {row['greedy_weight']:14,.3f}  "
        f"in pairs {int(row['greedy_placed']):,}",
        flush=True,
    )
    print(
        f"  assign: {row['assign_s']:7.2f} s  weight {row['assign_weight']:14,.3f}  "
        f"in pairs {int(row['assign_placed']):,}  "
        f"(placed with odd-one-out triples: {int(row['assign_placed_with_triples']):,})",
        flush=True,
    )
    if "exact_weight" in row:
        print(
            f"  exact:  {row['exact_s']:7.2f} s  weight {row['exact_weight']:14,.3f}  "
            f"in pairs {int(row['exact_placed']):,}",
            flush=True,
        )
        print(
            f"  assign / optimum {row['ratio']:.5f} (greedy {row['greedy_ratio']:.5f}); "
            f"everyone placeable placed: {'yes' if row['placed_all'] else 'NO'}; "
            f"a perfect matching exists: {'yes' if row['perfect'] else 'no'}",
            flush=True,
        )


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| people | edges | greedy weight / opt | greedy in pairs | assign weight / opt "
        "| assign in pairs | optimum in pairs | assign s | exact s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        exact = "exact_weight" in row
        lines.append(
            f"| {int(row['people']):,}"
            + (" (all with an edge)" if row["isolated"] == 0 else "")
            + f" | {int(row['edges']):,}"
            + (f" | {row['greedy_ratio']:.4f}" if exact else " | -")
            + f" | {int(row['greedy_placed']):,}"
            + (f" | {row['ratio']:.4f}" if exact else " | -")
            + f" | {int(row['assign_placed']):,}"
            + (f" | {int(row['exact_placed']):,}" if exact else " | -")
            + f" | {row['assign_s']:.2f}"
            + (f" | {row['exact_s']:.1f} |" if exact else " | - |")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--degree", type=int, default=10, help="candidates kept per person")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--skip-exact-above",
        type=int,
        default=5_000,
        help="no networkx comparison above this many people (it is O(n^3))",
    )
    parser.add_argument(
        "--large", type=int, default=LARGE, help="people in the timing-only run (0: none)"
    )
    args = parser.parse_args()
    rows = run(args.sizes, args.degree, args.seed, args.skip_exact_above, args.large or None)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
