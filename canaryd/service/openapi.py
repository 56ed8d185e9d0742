"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/v1/openapi.json``.

Written by hand next to the handlers in :mod:`canaryd.service.api_reads` and
:mod:`canaryd.service.api_commands` (the paths here, the component schemas in
:mod:`canaryd.service.openapi_schemas`); tests check that it
is a valid OpenAPI document, that its paths are exactly the app's routes, and
(with schemathesis) that the live API answers as it says.
"""

from __future__ import annotations

from typing import Any

from canaryd import __version__
from canaryd.core.analysis import GATES
from canaryd.service.openapi_schemas import Schema, ref, schemas

NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
ACTIONS = {
    "promote": (
        "Promote the canary now: skip the remaining analysis. A gate that is not approved "
        'is skipped only with {"force": true}.'
    ),
    "abort": "Roll the rollout back now (traffic returns to the primary).",
    "pause": "Pause the analysis: ticks stop judging until resumed.",
    "resume": "Resume a paused analysis.",
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": "The request is malformed (invalid JSON, unknown keys, bad revision).",
    "401": "Missing or wrong bearer token.",
    "404": "No such canary.",
    "409": "The command does not fit the canary's current state.",
    "502": "The router refused the command's route (its message is in the error).",
    "413": "The request body is larger than api.max_body_bytes.",
    "503": "The state store is unavailable.",
}


def _errors(*codes: int) -> dict[str, Schema]:
    return {str(c): _json(ref("Error"), _ERRORS[str(c)]) for c in codes}


_PARAMS = [
    {
        "name": "ns",
        "in": "path",
        "required": True,
        "description": "The canary's namespace.",
        "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 253},
        "example": "prod",
    },
    {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The canary's name.",
        "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 253},
        "example": "web",
    },
]
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _command(
    summary: str,
    operation_id: str,
    *,
    extra: list[Schema] | None = None,
    body: Schema | None = None,
) -> Schema:
    post: Schema = {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["commands"],
        "security": _BEARER,
        "parameters": _PARAMS + (extra or []),
        "responses": {
            "200": _json(ref("Canary"), "The canary's state after the command."),
            **_errors(400, 401, 404, 409, 413, 502, 503),
        },
    }
    if body is not None:
        post["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": post}


PROMOTE_BODY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "force": {"type": "boolean", "description": "Skip gates that are not approved."}
    },
}


def _health_paths() -> Schema:
    """Health, readiness, ``/metrics`` and this document: open to everyone."""
    return {
        "/healthz": {
            "get": {
                "summary": "The process is alive.",
                "operationId": "healthz",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json(ref("Health"), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Config loaded, store open, API listening, every loop running.",
                "operationId": "readyz",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": _json(ref("Ready"), "Ready."),
                    "503": _json(
                        ref("Error"),
                        "Starting, reloading or stopping; or behind schedule by more than 1 s "
                        '(then also `"status": "behind"`, `lagSeconds` and `canaries`).',
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "canaryd's own metrics (Prometheus text exposition format).",
                "operationId": "metrics",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(503),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
    }


def _paths() -> Schema:
    base = "/api/v1/canaries/{ns}/{name}"
    paths: Schema = {
        **_health_paths(),
        "/api/v1/canaries": {
            "get": {
                "summary": "Every configured canary with its state and last check.",
                "operationId": "listCanaries",
                "tags": ["canaries"],
                "security": _BEARER,
                "responses": {
                    "200": _json(ref("CanaryList"), "The canaries, in config order."),
                    **_errors(401, 503),
                },
            }
        },
        base: {
            "get": {
                "summary": "One canary with its recent checks and events (newest first).",
                "operationId": "getCanary",
                "tags": ["canaries"],
                "security": _BEARER,
                "parameters": _PARAMS,
                "responses": {
                    "200": _json(ref("CanaryDetail"), "The canary."),
                    **_errors(401, 404, 503),
                },
            }
        },
    }
    paths[base + "/rollouts"] = {"post": _start_rollout(), "get": _history_list()}
    paths[base + "/rollouts/{rollout}"] = _history_one()
    paths["/api/v1/events/stream"] = _stream()
    for action, summary in ACTIONS.items():
        body = PROMOTE_BODY if action == "promote" else None
        paths[f"{base}/{action}"] = _command(summary, f"{action}Canary", body=body)
    gate = {
        "name": "gate",
        "in": "path",
        "required": True,
        "description": "The gate to open.",
        "schema": {"type": "string", "enum": sorted(GATES)},
    }
    paths[base + "/gates/{gate}/approve"] = _command(
        "Open a confirm-* gate by hand (manual gates have no url).",
        "approveGate",
        extra=[gate],
    )
    return paths


def _start_rollout() -> Schema:
    return {
        "summary": "Start a rollout of a revision.",
        "operationId": "startRollout",
        "tags": ["commands"],
        "security": _BEARER,
        "parameters": _PARAMS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("RolloutRequest")}},
        },
        "responses": {
            "200": _json(ref("Canary"), "That revision is already under way."),
            "201": _json(
                ref("Canary"),
                "The rollout started (a new revision mid-rollout restarts it).",
            ),
            **_errors(400, 401, 404, 409, 413, 502, 503),
        },
    }


_ROLLOUT_PARAM: Schema = {
    "name": "rollout",
    "in": "path",
    "required": True,
    "description": "The rollout's id (rolloutId of the canary, id in the history).",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
    "example": "3f2a9c01d4e5",
}
_LIMIT_PARAM: Schema = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "How many rollouts at most (default 50).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 200},
}


def _history_list() -> Schema:
    return {
        "summary": "The canary's rollouts, newest first (past ones as long as history keeps them).",
        "operationId": "listRollouts",
        "tags": ["history"],
        "security": _BEARER,
        "parameters": [*_PARAMS, _LIMIT_PARAM],
        "responses": {
            "200": _json(ref("RolloutList"), "The rollouts."),
            **_errors(400, 401, 404, 503),
        },
    }


def _history_one() -> Schema:
    return {
        "get": {
            "summary": "One rollout with its checks and events, oldest first.",
            "operationId": "getRollout",
            "tags": ["history"],
            "security": _BEARER,
            "parameters": [*_PARAMS, _ROLLOUT_PARAM],
            "responses": {
                "200": _json(ref("RolloutDetail"), "The rollout."),
                **_errors(401, 404, 503),
            },
        }
    }


def _stream() -> Schema:
    return {
        "get": {
            "summary": (
                "Server-sent events: a `canary` event (a Canary) whenever a canary changes, "
                "a `hello` event first, comments as heartbeats."
            ),
            "operationId": "streamEvents",
            "tags": ["canaries"],
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "An endless text/event-stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(401),
                "503": _json(ref("Error"), "Too many open streams, or stopping."),
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict on each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "canaryd",
            "version": __version__,
            "description": (
                "Control API of canaryd. Mutating endpoints, and reads unless "
                "api.anonymous_read is on, need `Authorization: Bearer <token>`. "
                'Every error is JSON `{"error": "..."}`.'
            ),
        },
        "servers": [{"url": "http://127.0.0.1:9879"}],
        "security": _BEARER,
        "paths": _paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
