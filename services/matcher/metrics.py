"""The matcher's own metrics (shared consumer and outbox metrics are in shared/metrics.py)."""

from prometheus_client import Counter

PROPOSALS = Counter(
    "roac_matcher_proposals_total", "Introductions proposed (and queued for delivery)."
)
MATCH_ATTEMPTS = Counter(
    "roac_matcher_match_attempts_total",
    "People the matcher looked for a partner for, by outcome: proposed, no_candidate (nobody "
    "reachable shares a topic) or below_threshold (nobody scored high enough or all were met).",
    ["outcome"],
)
