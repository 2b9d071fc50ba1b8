"""The Faust Kafka transport with a configurable fetch wait.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. Brokers that answer
a fetch as soon as data arrives (Apache Kafka) don't care, but the embedded Tansu broker
answers only when the wait runs out, which put up to 1.5 s between a sample and the
live view. A short wait keeps live latency in milliseconds at the cost of more idle
fetch requests.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms = 20

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read by consumer.start()
        return consumer


def transport_for(app: Any, fetch_max_wait_ms: int) -> faust_aiokafka.Transport:
    """A transport for ``app`` whose consumers wait at most ``fetch_max_wait_ms`` per fetch."""
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
    consumer = type("Consumer", (faust_aiokafka.Consumer,), {
        "_new_consumer_thread": lambda self: thread(self, loop=self.loop, beacon=self.beacon)})
    transport_cls = type("Transport", (faust_aiokafka.Transport,), {"Consumer": consumer})
    return transport_cls(app.conf.broker_consumer, app)  # type: ignore[no-any-return]
