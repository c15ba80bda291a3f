"""The matcher's own metrics (shared consumer and outbox metrics are in shared/metrics.py)."""

from prometheus_client import Counter, Gauge, Histogram

PROPOSALS = Counter(
    "roac_matcher_proposals_total",
    "Introductions proposed (and queued for delivery), by trigger: live (an event), group (a "
    "rare topic's handful at once) or round.",
    ["trigger"],
)
MATCH_ATTEMPTS = Counter(
    "roac_matcher_match_attempts_total",
    "People the matcher looked for a partner for on a live event, by outcome: proposed, "
    "no_candidate (nobody reachable shares a topic), below_threshold (nobody scored high enough, "
    "or every candidate was excluded by a rule), unavailable (snoozed or at the weekly cap), or "
    "over_cap (chosen, then dropped under the row lock because another matcher used the room).",
    ["outcome"],
)
ROUNDS = Counter(
    "roac_matcher_rounds_total", "Rounds finished, by outcome: done or failed.", ["outcome"]
)
ROUND_SECONDS = Histogram(
    "roac_matcher_round_seconds",
    "Time from a round's start to its proposals committed.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ROUND_GROUPS = Counter(
    "roac_matcher_round_groups_total", "Groups proposed by rounds (dry runs excluded)."
)
ROUND_PEOPLE = Counter(
    "roac_matcher_round_people_total",
    "People considered by rounds, by outcome: placed or unplaced (dry runs excluded).",
    ["outcome"],
)
LAST_ROUND_COVERAGE = Gauge(
    "roac_matcher_last_round_coverage_ratio",
    "Share of the eligible people the last finished round placed in a group (NaN before one).",
)
LAST_ROUND_GROUPS = Gauge(
    "roac_matcher_last_round_groups",
    "Groups the last finished round proposed (NaN before one): proposals per round.",
)
FEEDBACK = Counter(
    "roac_matcher_feedback_total",
    "Feedback received on introductions, by outcome: met, did_not_meet or declined.",
    ["outcome"],
)
MERGES = Counter(
    "roac_matcher_merges_total",
    "Contacts merged into another by identity resolution, by what they shared: email or "
    "chat_handle.",
    ["matched_on"],
)
MERGES_REFUSED = Counter(
    "roac_matcher_merges_refused_total",
    "Contacts of different sources found to share a key but not merged, because not both "
    "sources are listed in ROAC_IDENTITY_VERIFIED_SOURCES, by what they shared (counted each "
    "time one of them is updated).",
    ["matched_on"],
)
UNMERGES = Counter(
    "roac_matcher_unmerges_total", "Merges undone by an operator (roac contacts unmerge)."
)

# Known label values exported from the start (at 0), so dashboards and alerts see the series
# before the first round or piece of feedback; the last-round gauges start as NaN (no data).
for _trigger in ("live", "group", "round"):
    PROPOSALS.labels(_trigger)
for _outcome in ("done", "failed"):
    ROUNDS.labels(_outcome)
for _outcome in ("placed", "unplaced"):
    ROUND_PEOPLE.labels(_outcome)
for _outcome in ("met", "did_not_meet", "declined"):
    FEEDBACK.labels(_outcome)
for _matched_on in ("email", "chat_handle"):
    MERGES.labels(_matched_on)
    MERGES_REFUSED.labels(_matched_on)
LAST_ROUND_COVERAGE.set(float("nan"))
LAST_ROUND_GROUPS.set(float("nan"))
