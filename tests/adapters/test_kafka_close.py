"""Closing a producer never fails its caller: the client is being dropped, whatever confluent-kafka raises."""

from __future__ import annotations

import pytest

from tradebot.adapters.kafka import KafkaProducer


class _ClientFailingToClose:
    """Stands in for confluent-kafka's Producer whose close fails as it did once in CI: a fenced transactional
    producer's last log lines reached the logger with the client's exception pending (CPython's SystemError
    "returned a result with an exception set")."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.closed = False

    def flush(self, timeout: float) -> int:
        return 0

    def purge(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        SystemError(
            "<built-in method __enter__ of _thread.lock object> returned a result with an exception set"
        ),
        RuntimeError("Producer already closed"),
    ],
)
def test_close_swallows_what_the_client_raises_as_it_is_dropped(error: BaseException) -> None:
    producer = KafkaProducer({"bootstrap.servers": "127.0.0.1:9"})
    real = producer._producer
    client = _ClientFailingToClose(error)
    producer._producer = client  # type: ignore[assignment]
    try:
        producer.close()
    finally:
        real.close()
    assert client.closed


def test_close_still_raises_what_is_not_about_closing() -> None:
    producer = KafkaProducer({"bootstrap.servers": "127.0.0.1:9"})
    real = producer._producer
    producer._producer = _ClientFailingToClose(ValueError("a bug of ours"))  # type: ignore[assignment]
    try:
        with pytest.raises(ValueError, match="a bug of ours"):
            producer.close()
    finally:
        real.close()
