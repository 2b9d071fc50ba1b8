"""Host measurements for the agent. psutil is imported here and nowhere else in the repository.

:class:`Sampler` runs the collectors listed in :data:`REGISTRY` and returns one
:class:`~schemas.metrics.MetricSample` per call.
"""

from agent.collectors.registry import (
    REGISTRY,
    Collector,
    CollectorFactory,
    SampleParts,
    Sampler,
    build_collectors,
)

__all__ = ["REGISTRY", "Collector", "CollectorFactory", "SampleParts", "Sampler",
           "build_collectors"]
