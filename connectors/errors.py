"""Base of the connector exception tree (drawn in ``connectors/__init__.py``)."""


class ConnectorError(Exception):
    """An external system failed or refused a request."""
