"""The notifier's own metrics (shared consumer and outbox metrics are in shared/metrics.py)."""

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

DELIVERIES = Counter(
    "roac_notifier_deliveries_total",
    "Delivery outcomes by channel, kind (ask, intro or resource) and outcome: sent, retried "
    "(transient failure, rescheduled), fallback (permanent failure, next channel), failed "
    "(permanent, no channel left), parked (out of attempts), rescheduled (quiet hours or pacing), "
    "duplicate, in_flight (a job for a delivery someone is sending: left to them), cancelled, "
    "suppressed (opted out).",
    ["channel", "kind", "outcome"],
)
SEND_SECONDS = Histogram(
    "roac_notifier_send_seconds",
    "Time to hand one message to the channel's provider.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
ATTEMPTS = Histogram(
    "roac_notifier_delivery_attempts",
    "Attempts a delivery took on its final channel, observed when it ends (sent, failed, parked).",
    ["channel", "outcome"],
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20),
)
PROPOSAL_TO_DELIVERY_SECONDS = Histogram(
    "roac_notifier_proposal_to_delivery_seconds",
    "Time from the matcher's proposal to a message delivered, by kind: ask, intro (in double "
    "opt-in mode including the time people took to answer) or resource.",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600, 72 * 3600),
)
INGEST_TO_FIRST_MESSAGE_SECONDS = Histogram(
    "roac_ingest_to_first_message_seconds",
    "From the event that led to an introduction entering roac (ingest) to the first message "
    "about it delivered (the ask, or the introduction in direct mode): the pipeline's latency. "
    "Objective: 10 s.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600),
)
ANSWERS = Counter(
    "roac_notifier_answers_total",
    "Answers to asks and their effect: accepted, declined, unsubscribed, expired, repeated "
    "(a second click), closed (the introduction had ended), invalid (bad or expired link), "
    "erased (a link of an erased person: nothing done).",
    ["answer"],
)
RECONCILED = Counter(
    "roac_notifier_in_flight_reconciled_total",
    "Deliveries found in flight and taken up (services/notifier/in_flight.py), by action: "
    "recorded (this process held the result: nothing sent again), resent (orphaned by a crash, "
    "sent again under the same key or once without one), parked (outcome unknown, not resent).",
    ["channel", "action"],
)
POSSIBLE_DUPLICATES = Counter(
    "roac_notifier_possible_duplicates_total",
    "Orphaned in-flight deliveries resent on a channel whose receiver may show both copies "
    "(email, Slack, Mattermost, Discord, Teams): each is at most one extra copy of a message. "
    "Generic webhooks and Matrix deduplicate by key and are not counted.",
    ["channel"],
)
SENDS_IN_FLIGHT = Gauge(
    "roac_notifier_sends_in_flight",
    "Deliveries this process recorded in flight (committed before calling the provider) whose "
    "result it has not recorded yet: what a crash or a database failure right now could send "
    "twice, at most once each. Results held through a database outage stay counted.",
)
