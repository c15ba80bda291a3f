"""The notifier's own metrics (shared consumer and outbox metrics are in shared/metrics.py)."""

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS

DELIVERIES = Counter(
    "roac_notifier_deliveries_total",
    "Delivery attempts by channel and outcome: sent, duplicate (already sent, skipped), "
    "failed_permanent, failed_transient (will be retried).",
    ["channel", "outcome"],
)
SEND_SECONDS = Histogram(
    "roac_notifier_send_seconds",
    "Time to hand one message to the channel's provider.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
