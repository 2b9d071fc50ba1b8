"""Every API route documents itself: the OpenAPI document builds from the docstrings."""

from ui.app import create_app, schemas
from ui.settings import UISettings


def test_every_api_route_is_in_the_openapi_document() -> None:
    app = create_app(UISettings())
    doc = schemas.get_schema(routes=app.routes)
    paths = doc["paths"]
    for path, method in [("/api/v1/alerts", "get"), ("/api/v1/alerts/{id}/ack", "post"),
                         ("/api/v1/alerts/{id}/unack", "post"),
                         ("/api/v1/alerts/silences", "post"),
                         ("/api/v1/alerts/silences/{id}", "delete"),
                         ("/api/v1/alerts/rules", "post"), ("/api/v1/alerts/rules/{id}", "put"),
                         ("/api/v1/alerts/stream", "get"), ("/api/v1/servers", "get")]:
        assert method in paths[path], (path, method)
        assert paths[path][method]["summary"]
        assert paths[path][method]["responses"]
