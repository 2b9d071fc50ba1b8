"""What the cron and file pages need from the schemas, rendered into the page.

The pages build their forms from this (the template picker's fields come from each template's
typed parameter model) and size their requests by these limits, so the browser never sends a
body the API refuses or asks for a result too large to come back inline.
"""

from __future__ import annotations

from typing import Any

from schemas.commands import MAX_INLINE_RESULT_BYTES
from schemas.cron import DEFAULT_PREVIEW, MAX_PREVIEW, MAX_SCHEDULE, TEMPLATE_PARAMS
from ui.commands_api import MAX_COMMAND_BODY


def _text(docstring: str | None) -> str:
    """A model's docstring as one plain line (no reST backquotes)."""
    return " ".join((docstring or "").replace("``", "").split())


def cron_templates() -> list[dict[str, Any]]:
    """The allowlisted cron templates: name, description, JSON Schema of the parameters and
    their order (the page's JSON has its keys sorted, so the schema's order is lost)."""
    return [{"name": name, "description": _text(model.__doc__),
             "schema": model.model_json_schema(), "order": list(model.model_fields)}
            for name, model in TEMPLATE_PARAMS.items()]


def limits() -> dict[str, int]:
    """Sizes the pages' requests and results must stay within."""
    return {"max_body": MAX_COMMAND_BODY, "max_result": MAX_INLINE_RESULT_BYTES,
            "max_schedule": MAX_SCHEDULE, "preview": DEFAULT_PREVIEW,
            "max_preview": MAX_PREVIEW}
