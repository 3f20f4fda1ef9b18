"""The OpenAPI document lists every status a route can answer, each with the API's error shape.

Routes declare their own successes and conflicts (409 with its codes); the errors every route shares
(authentication, validation, limits, outages) are added here once instead of on each of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

SHARED = {
    401: "`unauthorized`: no API key, or one that is not valid",
    403: "`cookie_read_only`: the dashboard cookie may only read; send the key as a bearer header",
    404: "`*_not_found` / `unknown_domain`: no such row in your project; `not_found`: no such path",
    422: "`invalid_input` (the message names the field) or a more specific code",
    429: "`rate_limited`: too many requests for this key; retry after `Retry-After` seconds",
    503: "`database_unavailable`: retry after `Retry-After` seconds",
}
WITH_BODY = {
    400: "`malformed_json`: the body is not valid JSON",
    409: "`bad_status` and other conflicts with the current state",
    413: "`payload_too_large`: the body exceeds MIXLAB_MAX_JSON_BYTES",
}
UPLOAD = {
    413: "`upload_too_large`: over MIXLAB_MAX_UPLOAD_BYTES (or MIXLAB_MAX_CORPUS_BYTES decompressed)",
    415: "`unsupported_media_type`: send the file as the raw body, not a form",
}


FASTAPI_DEFAULT = "Validation Error"  # FastAPI's own 422 entry, whose body is not ours


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, stable")
    message: str = Field(description="what went wrong and what to do about it")


class ErrorOut(BaseModel):
    error: ErrorDetail


def install(app: FastAPI, api_prefix: str) -> None:
    """Replace ``app.openapi`` with a generator that documents the shared errors of every API route."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorDetail"] = ErrorDetail.model_json_schema()
        components["Error"] = {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        }
        for path, item in schema.get("paths", {}).items():
            if path.startswith(api_prefix):
                for method, operation in item.items():
                    _document_errors(operation, method, upload=path.endswith("/corpus"))
        for stale in ("HTTPValidationError", "ValidationError"):
            components.pop(stale, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(operation: dict[str, Any], method: str, upload: bool) -> None:
    errors = dict(SHARED)
    if method in ("post", "put", "patch", "delete"):
        errors |= WITH_BODY
    if upload:
        errors |= UPLOAD
    responses = operation.setdefault("responses", {})
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for status, description in errors.items():
        declared = responses.get(str(status), {}).get("description", FASTAPI_DEFAULT)
        text = description if declared == FASTAPI_DEFAULT else declared
        responses[str(status)] = {"description": text, "content": content}
    for status, response in responses.items():  # statuses the route declared itself (409 codes)
        if status.startswith(("4", "5")):
            response["content"] = content
