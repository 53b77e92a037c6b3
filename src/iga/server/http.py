"""What the route modules share: the service of the running app, and the request body read defensively."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request as HttpRequest

from iga.server.service import ApiError, Service

POLL_S = 0.05  # how often an event stream looks for new events


def service_of(http: HttpRequest) -> Service:
    return http.app.state.service


Svc = Annotated[Service, Depends(service_of)]


async def json_object(http: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says where it is broken (the body's size is already
    bounded by the app's middleware)."""
    raw = await http.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ApiError(400, f"the request body is not valid JSON{where}: {getattr(e, 'msg', e)}",
                       kind="malformed JSON") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply", kind="malformed JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the request body must be a JSON object, not {type(data).__name__}")
    return data
