"""Agent scoping in one place (no Flask here).

An app with several agents (assistants with their own instructions and tools)
names one with the ``agent_id`` query parameter of a ChatKit URL. The agent
loader the app registers (``@chatkit.agent_loader``) says whether the user may
use it (:func:`scope_to_agent`, called by the blueprint for every request
naming one). From then on the request's context carries the agent, and:

- a thread it creates is stamped with the agent (:func:`stamp_thread`; the
  store keeps it in its own column, responders read ``thread.metadata``);
- every thread read, listed or changed is one of that agent's, on every store
  (:func:`agent_of` for the SQL store's scope, :func:`sees_agent` elsewhere);
- without ``agent_id`` a request sees all of the user's threads.
"""

from __future__ import annotations

import typing as t

from .errors import ErrorCode
from .errors import RequestError

if t.TYPE_CHECKING:
    from .types import ThreadMetadata

#: The query parameter that names the agent.
QUERY_PARAM = "agent_id"
#: The key of ``thread.metadata`` that holds a thread's agent (never sent to clients).
METADATA_KEY = "agent_id"

AgentLoader = t.Callable[[str, t.Any], t.Any]


def scope_to_agent(context: t.Any, agent_id: str, loader: AgentLoader | None) -> None:
    """Scope *context* to the agent *agent_id* that *loader* finds for its user.

    :raises RequestError: 404 ``agent_not_found`` when there is no loader or it
        returns ``None`` (unknown, or not this user's).
    """
    agent = None
    printable = agent_id.isprintable()  # no NUL or control characters reach a database
    if loader is not None and printable and 0 < len(agent_id) <= 255:
        agent = loader(agent_id, context)
    if agent is None:
        raise RequestError(
            f"No agent {agent_id!r} for this user."
            + ("" if loader else " (This server has no @chatkit.agent_loader.)"),
            code=ErrorCode.AGENT_NOT_FOUND,
            status=404,
            field=QUERY_PARAM,
        )
    context.agent_id = agent_id
    context.agent = agent


def agent_of(context: t.Any) -> str | None:
    """The agent a request is scoped to, as a string (``None``: all the user's threads)."""
    agent_id = getattr(context, "agent_id", None)
    return None if agent_id is None else str(agent_id)


def sees_agent(context: t.Any, thread_agent: str | None) -> bool:
    """Whether a request scoped as *context* sees a thread of *thread_agent*."""
    scope = agent_of(context)
    return scope is None or scope == thread_agent


def stamp_thread(thread: ThreadMetadata, context: t.Any) -> None:
    """Mark a new *thread* with the request's agent (private metadata)."""
    agent_id = agent_of(context)
    if agent_id is not None:
        thread.metadata[METADATA_KEY] = agent_id


__all__ = [
    "METADATA_KEY",
    "QUERY_PARAM",
    "AgentLoader",
    "agent_of",
    "scope_to_agent",
    "sees_agent",
    "stamp_thread",
]
