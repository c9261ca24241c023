"""A ready-made responder that answers with an OpenAI model (no Flask here).

::

    assistant = Assistant("You are a helpful travel agent.")

    @assistant.tool(progress="Checking the weather in {city}…")
    def weather(city: str) -> str:
        \"\"\"The current weather in a city.\"\"\"
        return "Sunny, 21 °C"

    assistant.add_mcp_server(MCPServer.stdio("python", ["mcp_server.py"]))
    chatkit = ChatKit(app, store=SQLAlchemyStore(db), responder=assistant)

The extension reads the model settings from the app config (``CHATKIT_MODEL``,
``CHATKIT_MODEL_API``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ... see
:class:`~flask_chatkit.assistant_settings.Settings`) and installs the ``respond``
and ``action`` hooks of the :class:`~flask_chatkit.responder.Responder` that
:meth:`Assistant.bind` makes. Each turn: the thread's history becomes model
input, the model's answer streams out as it arrives, tool calls run (function
tools, MCP tools, client tools, forms that wait for the user) and are recorded
in hidden items so that later turns and reloads see them, and a new thread gets
a title.

This module builds the assistant; the settings are in
:mod:`flask_chatkit.assistant_settings` and the per-turn engine in
:mod:`flask_chatkit.responder` (``Settings`` and ``Responder`` stay importable
from here).
"""

from __future__ import annotations

import dataclasses
import typing as t

from .assistant_settings import Settings as Settings
from .i18n import Catalog
from .responder import Responder as Responder
from .tools import Tool


@dataclasses.dataclass
class Agent:
    """A named profile the user can pick from the composer's tool menu
    (``inference_options.tool_choice.id``)."""

    name: str
    instructions: str = ""
    tools: list[str] | None = None  # tool names; None: all
    model: str | None = None


class Assistant:
    """An OpenAI-backed responder: tools, MCP servers, forms, titles, localized texts.

    :param instructions: the system instructions for every turn.
    :param tools: functions (or :class:`~flask_chatkit.tools.Tool` objects) to offer.
    :param mcp_servers: :class:`~flask_chatkit.mcp_servers.MCPServer` objects.
    :param messages: extra or replacement texts, ``{locale: {key: text}}``
        (see :mod:`flask_chatkit.i18n`).
    :param settings: keyword overrides of :class:`Settings` fields that win over
        the app config (e.g. ``model="gpt-5"``).
    """

    def __init__(
        self,
        instructions: str = "",
        *,
        tools: t.Iterable[t.Any] = (),
        mcp_servers: t.Iterable[t.Any] = (),
        messages: t.Mapping[str, t.Mapping[str, str]] | None = None,
        **settings: t.Any,
    ) -> None:
        unknown = set(settings) - {f.name for f in dataclasses.fields(Settings)}
        if unknown:
            raise TypeError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        self.instructions = instructions
        self.overrides = settings
        self.tools: dict[str, Tool] = {}
        self.mcp_servers: list[t.Any] = list(mcp_servers)
        self.agents: dict[str, Agent] = {}
        self.catalog = Catalog(messages)
        self._context_instructions: t.Callable[[t.Any, t.Any], str | None] | None = None
        for tool in tools:
            self.add_tool(tool)

    def add_tool(self, func: t.Any, **options: t.Any) -> Tool:
        """Offer *func* (or a :class:`Tool`) to the model; *options* as for :class:`Tool`."""
        tool = func if isinstance(func, Tool) else Tool(func, **options)
        if tool.name in self.tools:
            raise ValueError(f"A tool named {tool.name!r} is already registered.")
        self.tools[tool.name] = tool
        return tool

    def tool(self, func: t.Any = None, **options: t.Any) -> t.Any:
        """Decorator: ``@assistant.tool`` or ``@assistant.tool(progress=..., client=True)``."""
        if func is not None:
            self.add_tool(func, **options)
            return func

        def decorator(f: t.Any) -> t.Any:
            self.add_tool(f, **options)
            return f

        return decorator

    def add_mcp_server(self, server: t.Any) -> t.Any:
        """Offer the tools of an MCP server (see :mod:`flask_chatkit.mcp_servers`)."""
        self.mcp_servers.append(server)
        return server

    def agent(
        self,
        name: str,
        instructions: str = "",
        *,
        tools: list[str] | None = None,
        model: str | None = None,
    ) -> Agent:
        """Add a profile the user picks through ``tool_choice`` (its instructions are
        added to the assistant's; *tools* limits the tools offered)."""
        self.agents[name] = Agent(name, instructions, tools, model)
        return self.agents[name]

    def context_instructions(self, func: t.Callable[[t.Any, t.Any], str | None]) -> t.Any:
        """Register ``func(context, thread) -> str | None``: per-request instructions,
        e.g. who the user is and which page they are on (``context.metadata``).
        Whatever it returns is sent to the model: never put secrets in it."""
        self._context_instructions = func
        return func

    def bind(
        self,
        settings: Settings,
        store: t.Any,
        files: t.Any = None,
        action_fallback: t.Callable[[], t.Callable[..., t.Any] | None] | None = None,
    ) -> Responder:
        """A :class:`Responder` for one app (the extension calls this)."""
        merged = dataclasses.replace(settings, **self.overrides)
        return Responder(self, merged, store, files, action_fallback)


__all__ = ["Agent", "Assistant"]
