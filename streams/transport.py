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


def transport_for(app: Any, fetch_max_wait_ms: int) -> faust_aiokafka.Transport:
    """A transport for ``app`` whose consumers wait at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            if not hasattr(consumer, "_fetch_max_wait_ms"):  # fail loudly on an aiokafka change
                raise RuntimeError("aiokafka consumer has no _fetch_max_wait_ms to tune")
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by consumer.start()
            return consumer

    class TunedConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = TunedConsumer

    return Transport(app.conf.broker_consumer, app)
