"""Function tools for the responder: plain Python functions the model may call.

::

    @assistant.tool(progress="Looking up the weather in {city}…")
    def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"The current weather in a city.\"\"\"
        return f"Sunny, 21 °{unit}"

The JSON schema of the arguments comes from the type hints (through pydantic;
``Annotated[str, Field(description=...)]`` describes a parameter), the
description from the docstring. A parameter annotated :class:`ToolContext`
receives the thread, request context and call instead of a model argument.

What a tool returns becomes the text the model reads: a string as it is,
anything else as JSON. To show the user something too, return one of:

- :func:`show_widget` – a widget item in the chat (and text for the model);
- :func:`client_effect` – a ``client_effect`` event for the host page;
- :func:`ask_user` – a form the user fills in; the model waits for the answer;
- :func:`ask_questions` – ``structured_input`` questions, likewise.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing as t

import pydantic

from .types import StructuredInput

#: Action types of human-in-the-loop forms (sent through ``threads.custom_action``).
FORM_SUBMIT = "human.form_submit"
FORM_BEST_JUDGEMENT = "human.best_judgement"
FORM_CANCEL = "human.cancel"
HUMAN_ACTIONS = (FORM_SUBMIT, FORM_BEST_JUDGEMENT, FORM_CANCEL)


@dataclasses.dataclass
class ToolContext:
    """Given to a tool parameter annotated ``ToolContext``."""

    thread: t.Any
    context: t.Any
    call_id: str
    locale: str


@dataclasses.dataclass
class ToolResult:
    """A tool's answer: *output* for the model, and what the user sees."""

    output: t.Any = None
    widgets: list[tuple[dict[str, t.Any], str | None]] = dataclasses.field(default_factory=list)
    effects: list[tuple[str, dict[str, t.Any]]] = dataclasses.field(default_factory=list)
    #: The full raw result (e.g. an MCP tool's content blocks), stored with the call.
    content: t.Any = None
    is_error: bool = False


@dataclasses.dataclass
class AskUser:
    """A question for the user; the model gets the answer as the tool's output."""

    widget: dict[str, t.Any] | None = None
    copy_text: str | None = None
    inputs: list[t.Any] | None = None  # structured input questions


def show_widget(
    widget: dict[str, t.Any], copy_text: str | None = None, output: t.Any = None
) -> ToolResult:
    """Show *widget* in the chat; the model reads *output* (or *copy_text*)."""
    text = output if output is not None else copy_text or "The widget was shown to the user."
    return ToolResult(output=text, widgets=[(widget, copy_text)])


def client_effect(
    name: str, data: dict[str, t.Any] | None = None, output: t.Any = None
) -> ToolResult:
    """Send a ``client_effect`` event named *name* to the page."""
    return ToolResult(
        output=output if output is not None else "Done.", effects=[(name, data or {})]
    )


def ask_user(widget: dict[str, t.Any], copy_text: str | None = None) -> AskUser:
    """Show a form (see :func:`form_widget`) and wait for the user's answer."""
    return AskUser(widget=widget, copy_text=copy_text)


def ask_questions(*inputs: t.Any) -> AskUser:
    """Ask ``structured_input`` questions (dicts or models) and wait for the answers."""
    adapter = pydantic.TypeAdapter(StructuredInput)
    return AskUser(inputs=[adapter.validate_python(q) for q in inputs])


def form_widget(
    title: str,
    fields: t.Sequence[t.Mapping[str, t.Any]],
    *,
    text: str | None = None,
    submit_label: str = "Send",
    judgement_label: str | None = "Use your judgement",
    cancel_label: str = "Cancel",
) -> dict[str, t.Any]:
    """A form card whose buttons send the ``human.*`` actions.

    *fields*: ``{"name", "label"?, "placeholder"?, "options"?: [{"value","label"}]}``;
    fields with ``options`` become selects, the rest text inputs. The submitted
    values reach the model keyed by ``name``.
    """
    children: list[dict[str, t.Any]] = [{"type": "Title", "value": title, "size": "sm"}]
    if text:
        children.append({"type": "Text", "value": text})
    for field in fields:
        if field.get("label"):
            children.append({"type": "Label", "value": field["label"], "fieldName": field["name"]})
        if field.get("options"):
            children.append(
                {
                    "type": "Select",
                    "name": field["name"],
                    "options": list(field["options"]),
                    "placeholder": field.get("placeholder"),
                }
            )
        else:
            children.append(
                {
                    "type": "Input",
                    "name": field["name"],
                    "placeholder": field.get("placeholder"),
                    "required": bool(field.get("required", False)),
                }
            )
    if judgement_label:
        children.append(
            {
                "type": "Button",
                "label": judgement_label,
                "variant": "outline",
                "onClickAction": {"type": FORM_BEST_JUDGEMENT},
            }
        )
    return {
        "type": "Card",
        "asForm": True,
        "children": children,
        "confirm": {"label": submit_label, "action": {"type": FORM_SUBMIT}},
        "cancel": {"label": cancel_label, "action": {"type": FORM_CANCEL}},
    }


Progress = str | t.Mapping[str, str] | t.Callable[[dict[str, t.Any], str], str] | None


class Tool:
    """A function the model may call (see :meth:`Assistant.tool`).

    :param parameters: an explicit JSON schema instead of one from type hints.
    :param progress: the progress text while the tool runs: a format string
        (``{arg}`` placeholders), ``{locale: text}``, or ``func(args, locale)``.
    :param client: run in the browser: the responder emits a ``client_tool_call``
        and resumes when ``threads.add_client_tool_output`` arrives (*func* is
        then only a declaration; it is never called).
    """

    def __init__(
        self,
        func: t.Callable[..., t.Any] | None,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, t.Any] | None = None,
        progress: Progress = None,
        client: bool = False,
    ) -> None:
        if func is None and parameters is None:
            raise TypeError("A tool needs a function or an explicit parameters schema.")
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", ""))
        if not self.name:
            raise TypeError("A tool needs a name.")
        self.description = description or _first_paragraph(inspect.getdoc(func) or "")
        self.progress = progress
        self.client = client
        self._context_param: str | None = None
        self._model: type[pydantic.BaseModel] | None = None
        if parameters is not None:
            self.parameters = parameters
        else:
            self._model, self._context_param = _arguments_model(
                t.cast(t.Callable[..., t.Any], func)
            )
            self.parameters = self._model.model_json_schema()
            self.parameters.pop("title", None)

    @property
    def spec(self) -> dict[str, t.Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def progress_text(self, arguments: dict[str, t.Any], locale: str) -> str | None:
        """The tool's own progress text, or ``None`` to use the default one."""
        progress = self.progress
        if progress is None:
            return None
        if callable(progress):
            return progress(arguments, locale)
        if isinstance(progress, t.Mapping):
            progress = (
                progress.get(locale)
                or progress.get(locale.split("-")[0])
                or progress.get("en")
                or next(iter(progress.values()), None)
            )
            if progress is None:
                return None
        try:
            return str(progress).format(**{k: _short(v) for k, v in arguments.items()})
        except (KeyError, IndexError, ValueError):
            return str(progress)

    def __call__(self, arguments: dict[str, t.Any], tool_context: ToolContext) -> t.Any:
        """Validate *arguments* and run the function.

        :raises pydantic.ValidationError: when the arguments do not fit.
        """
        if self.func is None:
            raise RuntimeError(f"Tool {self.name!r} has no function to run.")
        if self._model is not None:
            values = dict(self._model.model_validate(arguments))
        else:
            values = dict(arguments)
        if self._context_param is not None:
            values[self._context_param] = tool_context
        return self.func(**values)


def _arguments_model(func: t.Callable[..., t.Any]) -> tuple[type[pydantic.BaseModel], str | None]:
    hints = t.get_type_hints(func, include_extras=True)
    fields: dict[str, t.Any] = {}
    context_param = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, t.Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = pydantic.create_model(
        f"{func.__name__}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    return model, context_param


def output_text(value: t.Any) -> str:
    """What the model reads for a tool's return value."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _first_paragraph(doc: str) -> str:
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def _short(value: t.Any, limit: int = 50) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "FORM_BEST_JUDGEMENT",
    "FORM_CANCEL",
    "FORM_SUBMIT",
    "AskUser",
    "Tool",
    "ToolContext",
    "ToolResult",
    "ask_questions",
    "ask_user",
    "client_effect",
    "form_widget",
    "show_widget",
]
