"""The gateway's OpenAPI document, composed from its upstreams' documents.

The gateway owns no data and validates no body: each service documents its own
operations. For every row of the route table this module takes the upstream's
operation, puts it under the public path, and adds what the gateway itself does:

- path parameters renamed as the public path names them; ``{actor_id}`` (the caller,
  filled in by the gateway) is not a parameter at all;
- header parameters only where the gateway forwards the header;
- bearer security on every route that needs a signed-in caller, with the 401, 403
  and 429 answers the gateway gives before any upstream is asked;
- links (OpenAPI 3.1) from the answer that creates an object to every route that
  takes its id, which stateful clients and fuzzers follow.

Its own live operations (tickets, SSE) are described here; the WebSocket is not an
OpenAPI operation. Pure: the adapters fetch the documents (adapters.apidocs).
"""

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.errors import ApiDocumentIncomplete
from gateway.domain.model import Access, Route

_PARAMETER = re.compile(r"\{([^}]+)\}")
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {"application/problem+json": {"schema": _PROBLEM}}
_RETRY_AFTER = {"description": "Seconds to wait", "required": True, "schema": {"type": "integer", "minimum": 0}}
# Every 429 describes the limit that refused it (draft-ietf-httpapi-ratelimit-headers).
_RATE_LIMIT = {
    "RateLimit-Limit": {"description": "The limit that refused the request", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "What is left of it", "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Reset": {"description": "Seconds until it allows more", "schema": {"type": "integer"}},
}
BEARER = "bearer"
ACTOR_PARAMETER = "actor_id"


@dataclass(frozen=True, slots=True)
class Link:
    """The answer ``status`` of ``method path`` creates an object whose id is at
    ``source``: every route whose path takes ``{parameter}`` can follow it."""

    method: str
    path: str
    status: str
    parameter: str
    source: str = "$response.body#/id"


LINKS: tuple[Link, ...] = (
    Link("POST", "/api/auth/register", "201", "user_id"),
    Link("POST", "/api/orders", "201", "order_id"),
)

_TICKET = {
    "type": "object",
    "required": ["ticket", "expires_in"],
    "properties": {
        "ticket": {"type": "string", "description": "Single use, for /api/events?ticket= and /ws?ticket="},
        "expires_in": {"type": "integer", "description": "Seconds"},
    },
}
# The gateway's own public operations besides the route table (entrypoints.passthrough).
OWN_OPERATIONS: dict[str, dict[str, Any]] = {
    "/api/auth/ticket": {
        "post": {
            "tags": ["auth"],
            "summary": "A single-use ticket for /api/events and /ws, where a browser cannot send a header",
            "operationId": "post_api_auth_ticket",
            "responses": {"200": {"description": "A ticket", "content": {"application/json": {"schema": _TICKET}}}},
        }
    },
    "/api/events": {
        "get": {
            "tags": ["live"],
            "summary": "The caller's notifications as Server-Sent Events; resumes after Last-Event-ID",
            "operationId": "get_api_events",
            "parameters": [
                {"name": "ticket", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "last-event-id", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "An endless event stream", "content": {"text/event-stream": {"schema": {}}}},
                "429": {
                    "description": "Over the caller's rate limit, or the caller already holds as many event "
                    "streams as allowed (then RateLimit-* describe that cap, and Retry-After is when a "
                    "held stream's lease can first lapse)",
                    "headers": {"Retry-After": _RETRY_AFTER, **_RATE_LIMIT},
                    "content": _PROBLEM_CONTENT,
                },
            },
        }
    },
}


def operation_id(*, method: str, path: str) -> str:
    """``POST /api/orders/{order_id}/cancel`` → ``post_api_orders_order_id_cancel``."""
    return "_".join([method.lower(), *re.findall(r"[a-z0-9]+", path.lower())])


def _shape(path: str) -> str:
    return _PARAMETER.sub("{}", path)


def _upstream_operation(*, route: Route, document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The upstream's operation for the route's target, and its path parameters'
    public names (upstream name → public name)."""
    method = route.method.lower()
    for path, operations in document.get("paths", {}).items():
        if _shape(path) == _shape(route.target) and method in operations:
            names = dict(zip(_PARAMETER.findall(path), _PARAMETER.findall(route.target), strict=True))
            return copy.deepcopy(operations[method]), names
    raise ApiDocumentIncomplete(f"{route.upstream} documents no {route.method} {route.target}")


def _public_parameters(
    *, parameters: Sequence[Mapping[str, Any]], names: Mapping[str, str], forwarded: frozenset[str]
) -> list[dict[str, Any]]:
    public: list[dict[str, Any]] = []
    for parameter in parameters:
        where, name = parameter["in"], parameter["name"]
        if where == "path":
            if names[name] == ACTOR_PARAMETER:
                continue
            public.append({**parameter, "name": names[name]})
        elif where == "header":
            if name.lower() in forwarded:
                public.append(dict(parameter))
        else:
            public.append(dict(parameter))
    return public


def _gateway_answers(*, access: Access) -> dict[str, Any]:
    """What the gateway itself may answer on a route before the upstream is asked."""
    answers: dict[str, Any] = {
        "429": {
            "description": "Over the caller's rate limit",
            "headers": {"Retry-After": _RETRY_AFTER, **_RATE_LIMIT},
            "content": _PROBLEM_CONTENT,
        }
    }
    if access is not Access.PUBLIC:
        answers["401"] = {"description": "No valid access token", "content": _PROBLEM_CONTENT}
    if access is Access.ADMIN:
        answers["403"] = {"description": "The caller is not an admin", "content": _PROBLEM_CONTENT}
    return answers


def _public_operation(*, route: Route, document: Mapping[str, Any]) -> dict[str, Any]:
    operation, names = _upstream_operation(route=route, document=document)
    operation["operationId"] = operation_id(method=route.method, path=route.path)
    if route.summary:
        operation["summary"] = route.summary
    operation["parameters"] = _public_parameters(
        parameters=operation.get("parameters", []),
        names=names,
        forwarded=frozenset(header.lower() for header in route.forward_headers),
    )
    if not operation["parameters"]:
        del operation["parameters"]
    operation["responses"] = {**_gateway_answers(access=route.access), **operation.get("responses", {})}
    if route.access is not Access.PUBLIC:
        operation["security"] = [{BEARER: []}]
    return operation


def _merge_schemas(*, into: dict[str, Any], schemas: Mapping[str, Any], source: str) -> None:
    for name, schema in schemas.items():
        if name in into and into[name] != schema:
            raise ApiDocumentIncomplete(f"{source} defines schema {name} unlike another service")
        into[name] = schema


def _link(*, paths: dict[str, Any], links: Sequence[Link]) -> None:
    for link in links:
        answer = paths.get(link.path, {}).get(link.method.lower(), {}).get("responses", {}).get(link.status)
        if answer is None:
            raise ApiDocumentIncomplete(f"no {link.status} answer of {link.method} {link.path} to link from")
        for path, operations in paths.items():
            if "{" + link.parameter + "}" not in path:
                continue
            for operation in operations.values():
                answer.setdefault("links", {})[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {link.parameter: link.source},
                }


def compose(
    *,
    routes: Sequence[Route],
    upstream_documents: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Any],
    links: Sequence[Link] = LINKS,
) -> dict[str, Any]:
    """The public document: ``own`` (the gateway app's document: health), the
    gateway's live operations, then every route as its upstream documents it.

    Raises ApiDocumentIncomplete when an upstream document lacks a route's operation
    or two upstreams define one schema name differently."""
    document = copy.deepcopy(dict(own))
    paths: dict[str, Any] = document.setdefault("paths", {})
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in OWN_OPERATIONS.items():
        paths[path] = {
            method: {
                **copy.deepcopy(operation),
                "security": [{BEARER: []}],
                "responses": {
                    **_gateway_answers(access=Access.USER),
                    **copy.deepcopy(operation["responses"]),
                    "default": {"description": "Any error, as a problem (RFC 9457)", "content": _PROBLEM_CONTENT},
                },
            }
            for method, operation in operations.items()
        }
    for name, upstream_document in upstream_documents.items():
        _merge_schemas(into=schemas, schemas=upstream_document.get("components", {}).get("schemas", {}), source=name)
    for route in routes:
        if route.upstream not in upstream_documents:
            raise ApiDocumentIncomplete(f"no document from {route.upstream}")
        paths.setdefault(route.path, {})[route.method.lower()] = _public_operation(
            route=route, document=upstream_documents[route.upstream]
        )
    document.setdefault("components", {})["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "POST /api/auth/token"}
    }
    _link(paths=paths, links=links)
    return document
