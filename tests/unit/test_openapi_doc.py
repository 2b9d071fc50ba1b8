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


def test_every_response_is_a_description_and_maybe_content() -> None:
    """A description with an unquoted ", x" in a YAML flow mapping became a stray key x."""
    app = create_app(UISettings())
    doc = schemas.get_schema(routes=app.routes)
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            for status, response in operation.get("responses", {}).items():
                assert set(response) <= {"description", "content"}, (path, method, status)
                assert isinstance(response["description"], str) and response["description"]
