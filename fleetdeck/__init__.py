"""FleetDeck: the ``fleetdeck`` command, settings and the embedded dev stack."""

__version__ = "0.1.0"
__all__ = ["__version__"]
