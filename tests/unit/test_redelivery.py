from shared.redelivery import MAX_DELAY_SECONDS, requeue_delay


def test_delays_grow_exponentially_and_are_capped() -> None:
    delays = [requeue_delay(n) for n in range(12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)
    assert max(delays) == MAX_DELAY_SECONDS
    assert requeue_delay(-3) == 0.5
    assert requeue_delay(10**6) == MAX_DELAY_SECONDS
