"""The settings of the built-in responder: how it reaches the model (no Flask here).

:class:`Settings` is read from the app config by the extension
(:meth:`Settings.from_config`); an :class:`~flask_chatkit.assistant.Assistant`'s
keyword overrides win over it.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from . import llm

__all__ = ["Settings"]


@dataclasses.dataclass
class Settings:
    """How the responder reaches the model; read from the app config by the extension.

    ============================== ==========================================
    ``CHATKIT_MODEL``              default model (``gpt-4.1-mini``)
    ``CHATKIT_MODEL_API``          ``responses`` (default) or ``chat``
    ``CHATKIT_MODELS``             allowlist for the composer's model picker:
                                   ``{"label": "provider-model"}`` or
                                   ``"label=provider-model,..."``
    ``CHATKIT_HISTORY_MAX_ITEMS``  newest thread items sent (40)
    ``CHATKIT_HISTORY_MAX_TOKENS`` estimated input token budget (16000)
    ``CHATKIT_MAX_TOOL_ROUNDS``    model calls with tools per turn (8)
    ``CHATKIT_TITLES``             generate thread titles (on)
    ``CHATKIT_TITLE_MODEL``        model for titles (the default model)
    ``CHATKIT_MODEL_TIMEOUT``      seconds to wait for the model (60)
    ``CHATKIT_MODEL_MAX_RETRIES``  the openai client's retries (2)
    ``OPENAI_API_KEY``             the key (else the environment variable)
    ``OPENAI_BASE_URL``            an OpenAI-compatible server (else the env)
    ``CHATKIT_TRACE_CONTENT``      message content on model call spans (off)
    ============================== ==========================================
    """

    model: str = "gpt-4.1-mini"
    api: llm.Api = "responses"
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    history_items: int = 40
    history_tokens: int = 16000
    max_tool_rounds: int = 8
    titles: bool = True
    title_model: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    api_key: str | None = dataclasses.field(default=None, repr=False)
    base_url: str | None = None
    #: Record message content on model call spans (``CHATKIT_TRACE_CONTENT``).
    trace_content: bool = False

    @classmethod
    def from_config(cls, cfg: t.Mapping[str, t.Any]) -> Settings:
        """Settings from a Flask config (or any mapping); unknown values raise ``RuntimeError``."""
        api = str(cfg.get("CHATKIT_MODEL_API") or "responses").strip().lower()
        if api not in ("responses", "chat"):
            raise RuntimeError(f"CHATKIT_MODEL_API must be 'responses' or 'chat', not {api!r}.")
        return cls(
            model=str(cfg.get("CHATKIT_MODEL") or cls.model),
            api=t.cast(llm.Api, api),
            models=_model_map(cfg.get("CHATKIT_MODELS")),
            history_items=_number(cfg, "CHATKIT_HISTORY_MAX_ITEMS", 40, int),
            history_tokens=_number(cfg, "CHATKIT_HISTORY_MAX_TOKENS", 16000, int),
            max_tool_rounds=_number(cfg, "CHATKIT_MAX_TOOL_ROUNDS", 8, int),
            titles=_flag(cfg.get("CHATKIT_TITLES", True)),
            title_model=cfg.get("CHATKIT_TITLE_MODEL") or None,
            timeout=_number(cfg, "CHATKIT_MODEL_TIMEOUT", 60.0, float),
            max_retries=_number(cfg, "CHATKIT_MODEL_MAX_RETRIES", 2, int),
            api_key=cfg.get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None,
            base_url=cfg.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None,
            trace_content=_flag(cfg.get("CHATKIT_TRACE_CONTENT", False)),
        )


def _model_map(value: t.Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, t.Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for entry in str(value).split(","):
        label, _, name = entry.partition("=")
        if label.strip():
            out[label.strip()] = (name or label).strip()
    return out


def _number(cfg: t.Mapping[str, t.Any], key: str, default: t.Any, kind: type) -> t.Any:
    value = cfg.get(key)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise RuntimeError(f"{key} must be a number, not {value!r}.") from None
    if not number >= 0:
        raise RuntimeError(f"{key} must not be negative.")
    return number


def _flag(value: t.Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)
