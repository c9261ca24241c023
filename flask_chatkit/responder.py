"""The per-turn engine of the built-in responder (no Flask here).

A :class:`Responder` is an :class:`~flask_chatkit.assistant.Assistant` bound to
one app's :class:`~flask_chatkit.assistant_settings.Settings` and store; its
``respond`` and ``action`` hooks run each turn: the thread's history becomes
model input, the model's answer streams out as it arrives, tool calls run
(function tools, MCP tools, client tools, forms that wait for the user) and are
recorded in hidden items so that later turns and reloads see them, and a new
thread gets a title.
"""

from __future__ import annotations

import json
import logging
import re
import time
import typing as t

import pydantic

from . import llm
from . import tracing
from .errors import CustomStreamError
from .history import TOOL_RECORD
from .history import is_tool_record
from .history import thread_input
from .streaming import MessageStream
from .streaming import stream_text
from .tools import FORM_BEST_JUDGEMENT
from .tools import FORM_CANCEL
from .tools import FORM_SUBMIT
from .tools import AskUser
from .tools import Tool
from .tools import ToolContext
from .tools import ToolResult
from .tools import output_text
from .types import Annotation
from .types import ClientEffectEvent
from .types import ClientToolCallItem
from .types import HiddenContextItem
from .types import NoticeEvent
from .types import ProgressUpdateEvent
from .types import StructuredInputItem
from .types import ThreadItemDoneEvent
from .types import ThreadItemReplacedEvent
from .types import URLSource
from .types import WidgetItem
from .types import utcnow

if t.TYPE_CHECKING:
    from .assistant import Agent
    from .assistant import Assistant
    from .assistant_settings import Settings

logger = logging.getLogger("flask_chatkit")

TITLE_INSTRUCTIONS = (
    "Write a title of at most six words for a conversation that starts with the "
    "user's message below. Answer with the title only: no quotes, no full stop."
)
BEST_JUDGEMENT_OUTPUT = (
    "The user did not fill in the form and asked you to use your best judgement."
)
CANCEL_OUTPUT = "The user declined to answer. Do not ask again unless they bring it up."
SKIPPED_OUTPUT = "The user skipped these questions."
#: Seconds an MCP server that could not be reached is left out before it is tried again.
MCP_RETRY_AFTER = 30.0
NOT_RUN_OUTPUT = "Not run: an earlier tool call in this step is waiting for the user."


class _Turn:
    """What one turn knows: thread, request, locale, items so far and the model to use."""

    def __init__(self, responder: Responder, thread: t.Any, context: t.Any) -> None:
        self.thread = thread
        self.context = context
        self.locale = responder.assistant.catalog.pick(getattr(context, "locale", None))
        settings = responder.settings
        self.items: list[t.Any] = list(
            reversed(
                responder.store.load_thread_items(
                    thread.id,
                    None,
                    max(settings.history_items, 1),
                    "desc",
                    context,
                    include_hidden=True,
                ).data
            )
        )
        self.model = settings.model
        self.agent: Agent | None = None
        self.forced_tool: str | None = None

    def pending_record(self) -> t.Any:
        for item in reversed(self.items):
            if is_tool_record(item) and item.content.get("status") == "pending":
                return item
        return None

    def last_user_message(self) -> t.Any:
        for item in reversed(self.items):
            if item.type == "user_message":
                return item
        return None


class Responder:
    """An :class:`Assistant` bound to one app's settings and store; provides the
    ``respond`` and ``action`` hooks."""

    def __init__(
        self,
        assistant: Assistant,
        settings: Settings,
        store: t.Any,
        files: t.Any,
        action_fallback: t.Callable[[], t.Callable[..., t.Any] | None] | None,
    ) -> None:
        self.assistant = assistant
        self.settings = settings
        self.store = store
        self.files = files
        self._action_fallback = action_fallback
        self._client: t.Any = None
        self._mcp_down: dict[int, float] = {}  # id(server) -> when to try it again

    @property
    def hooks(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"respond": self.respond, "action": self.action}

    @property
    def client(self) -> t.Any:
        """The ``openai.OpenAI`` client, made on first use."""
        if self._client is None:
            import openai

            key = self.settings.api_key
            if not key and not self.settings.base_url:
                raise llm.ModelError("config", "no OPENAI_API_KEY")
            self._client = openai.OpenAI(
                api_key=key or "unused",  # local OpenAI-compatible servers need none
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=self.settings.max_retries,
            )
        return self._client

    # --- hooks -----------------------------------------------------------------

    def respond(self, thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        """The ``respond`` hook: answer *message*, or continue after tool output."""
        turn = _Turn(self, thread, context)
        pending = turn.pending_record()
        if message is not None and pending is not None:
            yield from stream_text(
                thread, self._text("form.pending", turn), item_id=self._id("message", turn)
            )
            return
        if message is None and pending is not None:
            self._resolve_structured(turn, pending)
        yield from self._choose(turn, message or turn.last_user_message())
        yield from self._rounds(turn)
        if message is not None and not thread.title and self.settings.titles:
            thread.title = self._title(message, context, thread.id) or None

    def action(
        self, thread: t.Any, action: t.Any, sender: t.Any, context: t.Any
    ) -> t.Iterator[t.Any]:
        """The ``action`` hook: the ``human.*`` form actions; others go to the app's hook."""
        if action.type not in (FORM_SUBMIT, FORM_BEST_JUDGEMENT, FORM_CANCEL):
            fallback = self._action_fallback() if self._action_fallback else None
            if fallback is None:
                locale = self.assistant.catalog.pick(getattr(context, "locale", None))
                raise CustomStreamError(self.assistant.catalog.text("action.unknown", locale))
            yield from fallback(thread, action, sender, context) or ()
            return
        turn = _Turn(self, thread, context)
        record = None
        if sender is not None:
            for item in turn.items:
                ask = item.content.get("ask") if is_tool_record(item) else None
                if ask and ask.get("item_id") == sender.id:
                    record = item
        if record is None or record.content.get("status") != "pending":
            raise CustomStreamError(self._text("form.already_answered", turn))
        if action.type == FORM_SUBMIT:
            values = action.payload if isinstance(action.payload, dict) else {}
            output, status, note = (
                json.dumps({"answer": values}, ensure_ascii=False),
                "answered",
                "form.sent",
            )
        elif action.type == FORM_BEST_JUDGEMENT:
            output, status, note, values = (
                BEST_JUDGEMENT_OUTPUT,
                "answered",
                "form.best_judgement",
                {},
            )
        else:
            output, status, note, values = CANCEL_OUTPUT, "cancelled", "form.cancelled", {}
        self._resolve(turn, record, output, status)
        yield ThreadItemReplacedEvent(
            item=sender.model_copy(update={"widget": _summary_card(self._text(note, turn), values)})
        )
        yield from self._choose(turn, turn.last_user_message())
        yield from self._rounds(turn)

    # --- one turn ----------------------------------------------------------------

    def _text(self, key: str, turn: _Turn, **values: t.Any) -> str:
        return self.assistant.catalog.text(key, turn.locale, **values)

    def _choose(self, turn: _Turn, message: t.Any) -> t.Iterator[t.Any]:
        """Pick the model, agent and forced tool from the message's inference options."""
        options = getattr(message, "inference_options", None)
        requested = getattr(options, "model", None)
        if requested:
            if requested in self.settings.models:
                turn.model = self.settings.models[requested]
            else:
                yield NoticeEvent(
                    level="warning", message=self._text("model.not_allowed", turn, model=requested)
                )
        choice = getattr(getattr(options, "tool_choice", None), "id", None)
        if choice in self.assistant.agents:
            turn.agent = self.assistant.agents[choice]
            if turn.agent.model and not (requested and requested in self.settings.models):
                turn.model = turn.agent.model
        elif choice:
            turn.forced_tool = choice

    def _instructions(self, turn: _Turn) -> str:
        parts = [self.assistant.instructions]
        if turn.agent is not None:
            parts.append(turn.agent.instructions)
        hook = self.assistant._context_instructions
        if hook is not None:
            parts.append(hook(turn.context, turn.thread) or "")
        return "\n\n".join(p.strip() for p in parts if p and p.strip())

    def _tools(self, turn: _Turn) -> dict[str, t.Any]:
        """Tools offered this turn: name → :class:`Tool` or ``(mcp_server, tool_name)``."""
        offered: dict[str, t.Any] = dict(self.assistant.tools)
        for server in self.assistant.mcp_servers:
            if self._mcp_down.get(id(server), 0) > time.monotonic():
                continue  # failed a moment ago: do not make every turn wait for it
            try:
                specs = server.list_tools()
            except Exception:
                self._mcp_down[id(server)] = time.monotonic() + MCP_RETRY_AFTER
                logger.warning(
                    "MCP server %s is unavailable; its tools are left out.",
                    getattr(server, "name", server),
                    exc_info=True,
                )
                continue
            for spec in specs:
                name = spec["name"]
                if name in offered:
                    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server.name}__{name}")[:64]
                offered[name] = (server, spec)
        if turn.agent is not None and turn.agent.tools is not None:
            offered = {k: v for k, v in offered.items() if k in turn.agent.tools}
        return offered

    def _rounds(self, turn: _Turn) -> t.Iterator[t.Any]:
        """Call the model until it answers without tools (at most the round limit)."""
        offered = self._tools(turn)
        specs = [_spec(name, tool) for name, tool in offered.items()]
        forced = turn.forced_tool if turn.forced_tool in offered else None
        rounds = self.settings.max_tool_rounds
        for number in range(rounds + 1):
            choice = forced if number == 0 else None
            if number == rounds and specs:
                choice = "none"  # the last call must answer in words
            calls = yield from self._model_round(turn, specs, choice)
            if not calls:
                return
            waiting = False
            for call in calls:
                if waiting:
                    yield from self._record(turn, call, NOT_RUN_OUTPUT, "done")
                    continue
                waiting = yield from self._run_tool(turn, offered, call)
            if waiting:
                return

    def _model_round(
        self,
        turn: _Turn,
        specs: list[dict[str, t.Any]],
        choice: str | None,
    ) -> t.Generator[t.Any, None, list[llm.ToolCallRequest]]:
        text: MessageStream | None = None
        calls: list[llm.ToolCallRequest] = []
        try:
            client = self.client
            instructions = self._instructions(turn)
            model_input = thread_input(
                turn.items,
                self.settings.api,
                files=self.files,
                max_tokens=self.settings.history_tokens,
            )
            call = tracing.start_model_call(
                model=turn.model,
                conversation_id=turn.thread.id,
                client=client,
                content=self.settings.trace_content,
            )
            if call is not None:
                call.record_input(instructions, model_input)
            events = tracing.traced_model_stream(
                llm.stream_model(
                    client,
                    api=self.settings.api,
                    model=turn.model,
                    instructions=instructions,
                    input=model_input,
                    tools=specs,
                    tool_choice=choice,
                ),
                call,
            )
            for event in events:
                if isinstance(event, (llm.TextDelta, llm.Refusal, llm.AnnotationFound)):
                    if text is None:
                        text = MessageStream(turn.thread.id, self._id("message", turn))
                        yield from text.start()
                    if isinstance(event, llm.AnnotationFound):
                        yield text.annotation(
                            Annotation(
                                source=URLSource(url=event.url, title=event.title),
                                index=event.index,
                            )
                        )
                    elif (delta := text.delta(event.text)) is not None:
                        yield delta
                elif isinstance(event, llm.ToolCallRequest):
                    calls.append(event)
                elif isinstance(event, llm.Finished):
                    _report_usage(turn.context, event)
        except llm.ModelError as exc:
            if text is not None:
                yield from self._finish_text(turn, text)  # keep what the user already read
            logger.warning("The model failed on thread %s: %s", turn.thread.id, exc.kind)
            _report_model_error(turn.context, exc.kind)
            raise CustomStreamError(
                self._text(f"error.{exc.kind}", turn), allow_retry=exc.allow_retry
            ) from exc
        if text is not None:
            yield from self._finish_text(turn, text)
        return calls

    @staticmethod
    def _finish_text(turn: _Turn, text: MessageStream) -> t.Iterator[t.Any]:
        yield from text.finish()
        turn.items.append(text.done)  # the next model round sees the answer

    def _run_tool(
        self,
        turn: _Turn,
        offered: dict[str, t.Any],
        call: llm.ToolCallRequest,
    ) -> t.Generator[t.Any, None, bool]:
        """Run one tool call; return whether the turn now waits for the user."""
        tool = offered.get(call.name)
        try:
            arguments = llm.parse_arguments(call.arguments)
        except ValueError as exc:
            yield from self._record(
                turn,
                call,
                f"Error: the arguments are not a JSON object ({exc}).",
                "done",
                is_error=True,
            )
            return False
        if tool is None:
            yield from self._record(
                turn, call, f"Error: there is no tool named {call.name!r}.", "done", is_error=True
            )
            return False
        yield ProgressUpdateEvent(text=self._progress(turn, call.name, tool, arguments))
        if isinstance(tool, Tool) and tool.client:
            item = ClientToolCallItem(
                id=self._id("tool_call", turn),
                thread_id=turn.thread.id,
                created_at=utcnow(),
                call_id=call.call_id,
                name=call.name,
                arguments=arguments,
            )
            turn.items.append(item)
            yield ThreadItemDoneEvent(item=item)
            return True
        span = tracing.start_tool_call(
            name=call.name,
            call_id=call.call_id,
            conversation_id=turn.thread.id,
            content=self.settings.trace_content,
        )
        result = self._call(turn, tool, call, arguments)
        if span is not None:
            if isinstance(result, AskUser):
                span.finish(arguments, "(the tool asks the user)", is_error=False)
            else:
                span.finish(arguments, output_text(result.output), result.is_error)
        if isinstance(result, AskUser):
            return (yield from self._ask(turn, call, result))
        for widget, copy_text in result.widgets:
            yield from self._widget(turn, widget, copy_text)
        for name, data in result.effects:
            yield ClientEffectEvent(name=name, data=data)
        yield from self._record(
            turn,
            call,
            output_text(result.output),
            "done",
            content=result.content,
            is_error=result.is_error,
        )
        return False

    def _call(
        self, turn: _Turn, tool: t.Any, call: llm.ToolCallRequest, arguments: dict[str, t.Any]
    ) -> ToolResult | AskUser:
        """Run the tool; every failure becomes an error text for the model."""
        try:
            if isinstance(tool, Tool):
                value = tool(
                    arguments, ToolContext(turn.thread, turn.context, call.call_id, turn.locale)
                )
                return value if isinstance(value, (ToolResult, AskUser)) else ToolResult(value)
            server, spec = tool
            from .mcp_results import widgets_from_content

            found = server.call_tool(spec["name"], arguments)
            output = found.text if not found.is_error else f"Error: {found.text}"
            return ToolResult(
                output=output,
                content=found.content,
                is_error=found.is_error,
                widgets=widgets_from_content(found.content),
            )
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            return ToolResult(
                f"Error: invalid arguments for {call.name}: {problems}", is_error=True
            )
        except Exception as exc:
            logger.warning("Tool %s failed on thread %s.", call.name, turn.thread.id, exc_info=True)
            detail = str(exc)[:500]
            return ToolResult(
                f"Error: the tool {call.name} failed: {type(exc).__name__}"
                + (f": {detail}" if detail else ""),
                is_error=True,
            )

    def _ask(
        self, turn: _Turn, call: llm.ToolCallRequest, ask: AskUser
    ) -> t.Generator[t.Any, None, bool]:
        shown_id: str
        if ask.widget is not None:
            widget = yield from self._widget(turn, ask.widget, ask.copy_text)
            if widget is None:
                yield from self._record(
                    turn, call, "Error: the form could not be shown.", "done", is_error=True
                )
                return False
            kind, shown_id = "form", widget.id
        else:
            form = StructuredInputItem(
                id=self._id("message", turn),
                thread_id=turn.thread.id,
                created_at=utcnow(),
                inputs=ask.inputs or [],
            )
            turn.items.append(form)
            yield ThreadItemDoneEvent(item=form)
            kind, shown_id = "structured", form.id
        yield from self._record(turn, call, "", "pending", ask={"kind": kind, "item_id": shown_id})
        return True

    def _widget(
        self, turn: _Turn, widget: dict[str, t.Any], copy_text: str | None
    ) -> t.Generator[t.Any, None, WidgetItem | None]:
        try:
            item = WidgetItem(
                id=self._id("message", turn),
                thread_id=turn.thread.id,
                created_at=utcnow(),
                widget=widget,
                copy_text=copy_text,
            )
        except pydantic.ValidationError:
            logger.warning(
                "A tool returned a widget that is not valid; it was skipped.", exc_info=True
            )
            return None
        turn.items.append(item)
        yield ThreadItemDoneEvent(item=item)
        return item

    def _record(
        self, turn: _Turn, call: llm.ToolCallRequest, output: str, status: str, **extra: t.Any
    ) -> t.Iterator[t.Any]:
        """Store the call and its output in a hidden item, for history and reloads."""
        content = {
            "type": TOOL_RECORD,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments or "{}",
            "status": status,
            "output": output,
        }
        content.update({k: v for k, v in extra.items() if v not in (None, False)})
        item = HiddenContextItem(
            id=self._id("message", turn),
            thread_id=turn.thread.id,
            created_at=utcnow(),
            content=content,
        )
        turn.items.append(item)
        yield ThreadItemDoneEvent(item=item)

    def _resolve(self, turn: _Turn, record: t.Any, output: str, status: str) -> None:
        record.content = {**record.content, "output": output, "status": status}
        self.store.save_item(turn.thread.id, record, turn.context)

    def _resolve_structured(self, turn: _Turn, record: t.Any) -> None:
        """Turn answered ``structured_input`` into the waiting call's output."""
        ask = record.content.get("ask") or {}
        if ask.get("kind") != "structured":
            return
        item = next((i for i in turn.items if i.id == ask.get("item_id")), None)
        if item is None or item.status == "pending":
            return
        if item.status == "skipped":
            self._resolve(turn, record, SKIPPED_OUTPUT, "answered")
            return
        answers = {
            q.question: (None if q.answer is None or q.answer.skipped else q.answer.values)
            for q in item.inputs
        }
        self._resolve(
            turn, record, json.dumps({"answers": answers}, ensure_ascii=False), "answered"
        )

    def _progress(self, turn: _Turn, name: str, tool: t.Any, arguments: dict[str, t.Any]) -> str:
        text = tool.progress_text(arguments, turn.locale) if isinstance(tool, Tool) else None
        return text or self._text("tool.running", turn, tool=name)

    def _id(self, kind: str, turn: _Turn) -> str:
        item_id: str = self.store.generate_item_id(kind, turn.thread, turn.context)
        return item_id

    def _title(self, message: t.Any, context: t.Any, thread_id: str | None = None) -> str:
        """A short title for the thread: the model's, or the message's first words."""
        text = " ".join("".join(getattr(p, "text", "") for p in message.content).split())
        if not text:
            return ""
        model = self.settings.title_model or self.settings.model
        call: tracing.ModelCall | None = None
        used: list[llm.Finished] = []

        def on_usage(finished: llm.Finished) -> None:
            used.append(finished)
            _report_usage(context, finished)

        try:
            client = self.client
            call = tracing.start_model_call(
                model=model,
                conversation_id=thread_id,
                client=client,
                content=self.settings.trace_content,
            )
            if call is not None:
                call.record_input(TITLE_INSTRUCTIONS, [{"role": "user", "content": text[:2000]}])
            title = llm.complete_text(
                client,
                api=self.settings.api,
                model=model,
                instructions=TITLE_INSTRUCTIONS,
                text=text[:2000],
                on_usage=on_usage,
            )
            if call is not None and used:
                call.finish(used[0], answer=title)
        except llm.ModelError as exc:
            if call is not None:
                call.fail(exc.kind)
            logger.info("No title from the model (%s); using the first words.", exc.kind)
            _report_model_error(context, exc.kind)
            title = ""
        finally:
            if call is not None:
                call.end()
        title = " ".join(title.split()).strip(" \"'“”«».")
        return _shorten(title or text, 60)


def _report_usage(context: t.Any, used: llm.Finished) -> None:
    """Tell the request's context what a model call used (an app's own context
    class may lack ``report_usage``)."""
    report = getattr(context, "report_usage", None)
    if report is not None:
        report(used.input_tokens, used.output_tokens, model=used.model)


def _report_model_error(context: t.Any, kind: str) -> None:
    """Tell the request's context a model call failed (for metrics and the access log)."""
    report = getattr(context, "report_model_error", None)
    if report is not None:
        report(kind)


def _spec(name: str, tool: t.Any) -> dict[str, t.Any]:
    if isinstance(tool, Tool):
        return {**tool.spec, "name": name}
    _, spec = tool
    return {
        "name": name,
        "description": spec.get("description") or "",
        "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
    }


def _summary_card(note: str, values: dict[str, t.Any]) -> dict[str, t.Any]:
    children = [{"type": "Text", "value": note, "weight": "semibold"}]
    for key, value in values.items():
        children.append({"type": "Text", "value": f"{key}: {output_text(value)}", "size": "sm"})
    return {"type": "Card", "children": children}


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:") + "…"


__all__ = ["Responder"]
