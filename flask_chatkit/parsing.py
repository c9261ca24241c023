"""Request bodies in, request models out, or a 400 naming the field (no Flask here)."""

from __future__ import annotations

import json
import typing as t

from pydantic import ValidationError

from . import requests as rq
from .errors import ErrorCode
from .errors import RequestError
from .limits import MAX_JSON_CONTAINERS
from .limits import MAX_REPARSED_BODY


def _field_path(loc: t.Sequence[t.Any], body: t.Any) -> str | None:
    """The dotted request path of a pydantic error location.

    Pydantic puts the tag of each tagged union into the location
    (``threads.create.params.input.content.0.input_text.text``); walking the
    body tells those tags from real keys. Without the body (too big to parse
    twice) only the request type is known to be a tag: it has a dot, no key has.
    """
    parts = []
    node = body
    if body is None and loc and isinstance(loc[0], str) and "." in loc[0]:
        loc = loc[1:]
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # a union tag, not a field
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts) or None


#: Longest piece of the client's input (a tag, a key) quoted back in an error.
_MAX_QUOTED = 200


def _clip(text: str) -> str:
    """*text*, cut to :data:`_MAX_QUOTED` characters (errors never echo huge input)."""
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "..."


def _validation_error(exc: ValidationError, body: t.Any = None) -> RequestError:
    """A 400 naming the first field at fault, without echoing the input."""
    err = exc.errors(include_url=False, include_input=False)[0]
    if err["type"] == "json_invalid":
        return RequestError("The request body is not valid JSON.", code=ErrorCode.INVALID_JSON)
    if err["type"] == "union_tag_invalid" and not err["loc"]:
        tag = _clip(str(err.get("ctx", {}).get("tag", "")))
        return RequestError(
            f"Unknown request type {tag!r}.", code=ErrorCode.UNKNOWN_REQUEST_TYPE, field="type"
        )
    if err["type"] == "union_tag_not_found" and not err["loc"]:
        return RequestError("The request has no 'type'.", field="type")
    field = _field_path(err["loc"], body)
    if field is not None:  # dict keys (e.g. structured input answers) are client input
        field = _clip(field)
    where = f"{field}: " if field else ""
    return RequestError(f"Invalid request: {where}{_clip(err['msg'])}.", field=field)


def parse_request(body: bytes | str) -> t.Any:
    """Validate a request body; :class:`RequestError` (400) names what is wrong."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_CONTAINERS:  # counted in C, before parsing
        raise RequestError(
            f"The request holds more than {MAX_JSON_CONTAINERS} JSON objects and arrays.",
            code=ErrorCode.REQUEST_TOO_COMPLEX,
        )
    try:
        return rq.ChatKitReqAdapter.validate_json(body)
    except ValidationError as exc:
        data = None  # not JSON at all (the error says so), or too big to parse twice
        if len(raw) <= MAX_REPARSED_BODY:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                pass
        raise _validation_error(exc, data) from None


__all__ = ["parse_request"]
