"""How long a consumer waits before handing back a message that failed for a transient reason.

RabbitMQ redelivers a requeued message at once; without a pause, a database restart would burn
through the queue's delivery limit in milliseconds and park messages that only needed patience.
"""

BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0


def requeue_delay(delivery_count: int) -> float:
    """Exponential: 0.5 s on the first failure, doubling, capped at 30 s."""
    exponent = max(0, min(delivery_count, 16))
    return float(min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2**exponent))
