"""One module per external system: a settings model, an async client and one error class.

Library exceptions are translated here and never leak upward::

    ConnectorError
    ├── KafkaError           (connectors.kafka)
    ├── LiveStreamError      (connectors.redis_live)
    └── VictoriaMetricsError (connectors.victoriametrics)
"""

from connectors.errors import ConnectorError

__all__ = ["ConnectorError"]
