"""The offline demo responder: deterministic answers, no API key needed.

With ``OPENAI_API_KEY`` set, the ``respond`` and ``action`` hooks hand over to
the model responder of :mod:`example_app.assistant` instead (widget actions
other than its forms still come back to :func:`widget_action`).

Plain messages get an echo streamed word by word. Messages starting with a
command show one protocol feature each: ``/progress``, ``/slow``, ``/error``,
``/widget`` (a counter with server actions), ``/form`` (a booking form whose
submitted values come back in the answer), ``/tool`` (a client tool call)
and ``/ask`` (a structured-input question). In a chat with an agent
(``/chatkit?agent_id=``), the echo says which agent answers; the Pirate talks
like one. Hooks only use the context they
are given and the store, never ``flask.request`` or ``current_user``: with
heartbeats on, they run in a greenlet of their own.
"""

from __future__ import annotations

import json
import secrets
import time
import typing as t

from flask import current_app

from flask_chatkit import CustomStreamError
from flask_chatkit import RequestError
from flask_chatkit import progress
from flask_chatkit import stream_text
from flask_chatkit import widget_item
from flask_chatkit.streaming import new_item_id
from flask_chatkit.streaming import user_text
from flask_chatkit.types import Action
from flask_chatkit.types import AudioInput
from flask_chatkit.types import ClientToolCallItem
from flask_chatkit.types import StructuredInputFreeform
from flask_chatkit.types import StructuredInputItem
from flask_chatkit.types import StructuredInputMultipleChoice
from flask_chatkit.types import StructuredInputOption
from flask_chatkit.types import ThreadItemDoneEvent
from flask_chatkit.types import ThreadItemReplacedEvent
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import UserMessageItem

from .assistant import EXTENSION_KEY
from .extensions import chatkit

if t.TYPE_CHECKING:
    from flask_chatkit.responder import Responder

Events = t.Iterator[t.Any]

#: Longest thread title taken from a first message.
TITLE_LENGTH = 40
#: The widget action that increments the counter.
INCREMENT = "demo.increment"
#: The client tool the ``/tool`` command asks the page to run.
PAGE_CONTEXT_TOOL = "get_page_context"
#: The booking form's actions (``/form``).
BOOK, BOOK_CANCEL = "demo.book", "demo.book_cancel"
#: Party sizes the booking form offers.
PARTY_SIZES = tuple(range(1, 9))
HELP = "Try /progress, /slow, /error, /widget, /form, /tool or /ask."


def _setting(key: str) -> t.Any:
    return current_app.config[key]


def model_responder() -> Responder | None:
    """The app's model responder, or ``None`` when the offline demo answers."""
    return current_app.extensions.get(EXTENSION_KEY)  # type: ignore[no-any-return]


def paced(chunks: t.Iterable[str], delay: float) -> t.Iterator[str]:
    """Yield *chunks* with *delay* seconds before each (cooperative under gevent)."""
    for chunk in chunks:
        if delay > 0:
            time.sleep(delay)
        yield chunk


def words(text: str) -> list[str]:
    """*text* split into words that keep their trailing space, for streaming."""
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + [parts[-1]]


def title_for(text: str) -> str:
    """A thread title from a first message: one line, at most :data:`TITLE_LENGTH`."""
    line = " ".join(text.split()) or "New chat"
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def _say(thread: ThreadMetadata, text: str) -> Events:
    return stream_text(thread, paced(words(text), _setting("DEMO_STREAM_DELAY")))


# --- the responder -------------------------------------------------------------


@chatkit.respond
def respond(thread: ThreadMetadata, user_message: UserMessageItem | None, context: t.Any) -> Events:
    """Answer a message, or continue a turn after tool output or structured input."""
    responder = model_responder()
    if responder is not None:
        yield from responder.respond(thread, user_message, context)
        return
    if user_message is None:
        yield from resume(thread, context)
        return
    text = user_text(user_message).strip()
    if thread.title is None:
        thread.title = title_for(text)  # goes out as thread.updated
    command = text.split(" ", 1)[0].lower()
    handler = COMMANDS.get(command)
    if handler is None:
        yield from echo(thread, text, getattr(context, "agent", None))
    else:
        yield from handler(thread, text)


def echo(thread: ThreadMetadata, text: str, agent: t.Any = None) -> Events:
    """A plain message: quote it back, a word at a time, in the agent's voice."""
    name = getattr(agent, "name", None)
    if name == "Pirate":
        reply = f"Arr! Pirate here. Ye said: “{text}”. This be the offline demo responder. {HELP}"
    elif name:
        reply = f"{name} here. You said: “{text}”. This is the offline demo responder. {HELP}"
    else:
        reply = f"You said: “{text}”. This is the offline demo responder. {HELP}"
    yield from _say(thread, reply)


def show_progress(thread: ThreadMetadata, text: str) -> Events:
    """``/progress``: two progress updates, then the answer."""
    delay = _setting("DEMO_STREAM_DELAY")
    yield progress("Reading the thread…", icon="search")
    time.sleep(delay)
    yield progress("Writing the answer…", icon="write")
    time.sleep(delay)
    yield from _say(thread, "Done: progress updates are shown while the answer is prepared.")


def slow(thread: ThreadMetadata, text: str) -> Events:
    """``/slow``: count to ``DEMO_SLOW_CHUNKS``, one delta every ``DEMO_SLOW_DELAY`` s."""
    count = int(_setting("DEMO_SLOW_CHUNKS"))
    chunks = [f"{n} " for n in range(1, count)] + [str(count)]
    yield from stream_text(thread, paced(chunks, _setting("DEMO_SLOW_DELAY")))


def fail(thread: ThreadMetadata, text: str) -> Events:
    """``/error``: some text, then an error event.

    The text so far is finished as a complete message first, so it is saved
    and the client shows it whole above the error (an unfinished message would
    vanish on reload).
    """
    yield from _say(thread, "Let me try that… something went wrong partway.")
    raise CustomStreamError(
        "The demo failed on purpose (/error). Nothing is broken.", allow_retry=True
    )


def counter(thread: ThreadMetadata, text: str) -> Events:
    """``/widget``: a card with a counter and two buttons (streamed and instant action)."""
    yield ThreadItemDoneEvent(item=widget_item(thread, counter_widget(0), copy_text="Count: 0"))


def booking_form(thread: ThreadMetadata, text: str) -> Events:
    """``/form``: a form card (time and party size); submitting it is answered with the values."""
    yield ThreadItemDoneEvent(item=widget_item(thread, booking_widget(), copy_text="Booking form"))


def ask_page_context(thread: ThreadMetadata, text: str) -> Events:
    """``/tool``: ask the page to run a client tool; its output resumes the turn."""
    yield ThreadItemDoneEvent(
        item=ClientToolCallItem(
            id=new_item_id("tool_call"),
            thread_id=thread.id,
            call_id=f"call_{secrets.token_hex(8)}",
            name=PAGE_CONTEXT_TOOL,
            arguments={"fields": ["title", "url"]},
        )
    )


def ask(thread: ThreadMetadata, text: str) -> Events:
    """``/ask``: a multiple-choice and a freeform question; the answers resume the turn."""
    yield from _say(thread, "Two quick questions:")
    yield ThreadItemDoneEvent(
        item=StructuredInputItem(
            id=new_item_id(),
            thread_id=thread.id,
            inputs=[
                StructuredInputMultipleChoice(
                    id="colour",
                    question="Which colour do you like best?",
                    options=[StructuredInputOption(value=v) for v in ("red", "green", "blue")],
                ),
                StructuredInputFreeform(id="why", question="Why that one?"),
            ],
        )
    )


COMMANDS: dict[str, t.Callable[[ThreadMetadata, str], Events]] = {
    "/progress": show_progress,
    "/slow": slow,
    "/error": fail,
    "/widget": counter,
    "/form": booking_form,
    "/tool": ask_page_context,
    "/ask": ask,
}


def resume(thread: ThreadMetadata, context: t.Any) -> Events:
    """Continue after ``add_client_tool_output`` or ``add_structured_input``.

    The newest answered tool call or question (read from the store with the
    request's context) says what the user or the page sent.
    """
    recent = chatkit.store.load_thread_items(
        thread.id, None, 20, "desc", context, include_hidden=False
    ).data
    for item in recent:
        if item.type == "client_tool_call" and item.status == "completed":
            output = json.dumps(item.output, ensure_ascii=False, sort_keys=True)
            yield from _say(thread, f"The page sent its context: {output}")
            return
        if item.type == "structured_input" and item.status != "pending":
            yield from _say(thread, "Your answers: " + describe_answers(item))
            return
    yield from _say(thread, "There is nothing to continue from.")


def describe_answers(item: StructuredInputItem) -> str:
    """One line per question: ``question → answer`` (or ``(skipped)``)."""
    lines = []
    for question in item.inputs:
        answer = question.answer
        given = ", ".join(answer.values) if answer and not answer.skipped else "(skipped)"
        lines.append(f"{question.question} → {given}")
    return "; ".join(lines)


# --- the booking form -------------------------------------------------------------


def booking_widget() -> dict[str, t.Any]:
    """A card used as a form: a time input, a party-size select, Book and Cancel."""
    return {
        "type": "Card",
        "asForm": True,
        "children": [
            {"type": "Title", "value": "Book a table", "size": "sm"},
            {"type": "Label", "value": "Time", "fieldName": "time"},
            {"type": "Input", "name": "time", "placeholder": "19:00", "required": True},
            {"type": "Label", "value": "Guests", "fieldName": "party_size"},
            {
                "type": "Select",
                "name": "party_size",
                "placeholder": "How many?",
                "options": [{"value": str(n), "label": str(n)} for n in PARTY_SIZES],
            },
        ],
        "confirm": {"label": "Book", "action": {"type": BOOK}},
        "cancel": {"label": "Cancel", "action": {"type": BOOK_CANCEL}},
    }


def booked_widget(summary: str) -> dict[str, t.Any]:
    """What the form turns into once answered (so it cannot be sent twice)."""
    return {
        "type": "Card",
        "children": [
            {"type": "Title", "value": "Book a table", "size": "sm"},
            {"type": "Text", "value": summary},
        ],
    }


def form_value(payload: t.Any, name: str, limit: int = 40) -> str:
    """A submitted form value as one short line ('' if missing): it comes from the browser."""
    value = payload.get(name) if isinstance(payload, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return ""
    line = " ".join(value.split())
    return line[:limit]


def booking_answer(thread: ThreadMetadata, action: Action, sender: t.Any) -> Events:
    """Answer the booking form: the card shows the outcome, then a message echoes the values."""
    if action.type == BOOK_CANCEL:
        summary = "Cancelled: nothing was booked."
    else:
        time_text = form_value(action.payload, "time") or "(no time)"
        size = form_value(action.payload, "party_size")
        people = "1 person" if size == "1" else f"{size or '?'} people"
        summary = f"Booked: {people} at {time_text}."
    if sender is not None and sender.type == "widget":
        yield ThreadItemReplacedEvent(
            item=sender.model_copy(update={"widget": booked_widget(summary), "copy_text": summary})
        )
    yield from _say(thread, summary)


# --- the counter widget ----------------------------------------------------------


def counter_widget(count: int) -> dict[str, t.Any]:
    """The counter card: the count, a streamed ``+1`` and an instant ``+1``."""

    def button(label: str, streaming: bool) -> dict[str, t.Any]:
        action = {
            "type": INCREMENT,
            "payload": {"by": 1},
            "handler": "server",
            "loadingBehavior": "auto",
            "streaming": streaming,
        }
        return {"type": "Button", "label": label, "onClickAction": action}

    return {
        "type": "Card",
        "children": [
            {"type": "Text", "id": "count", "value": f"Count: {count}"},
            button("+1", True),
            button("+1 (instant)", False),
        ],
    }


def current_count(widget: dict[str, t.Any]) -> int | None:
    """The count shown by a counter widget, or ``None`` if it is not one."""
    for child in widget.get("children", ()):
        if child.get("id") == "count":
            _, _, number = str(child.get("value", "")).rpartition(" ")
            try:
                return int(number)
            except ValueError:
                return None
    return None


def incremented(action: Action, sender: t.Any) -> t.Any:
    """The sender widget item with its counter increased, or ``None`` if not applicable.

    The count lives in the widget item itself, so every worker (and a restart)
    sees the same value.
    """
    if action.type != INCREMENT or sender is None or sender.type != "widget":
        return None
    count = current_count(sender.widget)
    if count is None:
        return None
    payload = action.payload if isinstance(action.payload, dict) else {}
    step = payload.get("by", 1)
    step = step if isinstance(step, int) and 0 < step <= 100 else 1
    count += step
    return sender.model_copy(
        update={"widget": counter_widget(count), "copy_text": f"Count: {count}"}
    )


@chatkit.action
def on_action(thread: ThreadMetadata, action: Action, sender: t.Any, context: t.Any) -> Events:
    """A streamed widget action: the model responder's (its forms, then
    :func:`widget_action`), or the demo's own."""
    responder = model_responder()
    if responder is not None:
        yield from responder.action(thread, action, sender, context)
    else:
        yield from widget_action(thread, action, sender, context)


def widget_action(thread: ThreadMetadata, action: Action, sender: t.Any, context: t.Any) -> Events:
    """The demo's streamed actions: the booking form's, and the counter's (which
    replaces the widget; the server saves the new item)."""
    if action.type in (BOOK, BOOK_CANCEL):
        yield from booking_answer(thread, action, sender)
        return
    updated = incremented(action, sender)
    if updated is None:
        raise CustomStreamError(f"The demo cannot handle the action {action.type!r}.")
    yield ThreadItemReplacedEvent(item=updated)


@chatkit.sync_action
def on_sync_action(thread: ThreadMetadata, action: Action, sender: t.Any, context: t.Any) -> t.Any:
    """An instant widget action: save the updated widget and return it."""
    updated = incremented(action, sender)
    if updated is None:
        raise RequestError(
            f"The demo cannot handle the action {action.type!r}.", field="params.action.type"
        )
    chatkit.store.save_item(thread.id, updated, context)
    return updated


@chatkit.transcribe
def on_transcribe(audio: AudioInput, context: t.Any) -> str:
    """A fake dictation result that shows what arrived."""
    return f"(demo transcription of {len(audio.data)} bytes of {audio.media_type})"


__all__ = [
    "BOOK",
    "BOOK_CANCEL",
    "COMMANDS",
    "booking_widget",
    "counter_widget",
    "current_count",
    "incremented",
    "model_responder",
    "respond",
    "widget_action",
]
