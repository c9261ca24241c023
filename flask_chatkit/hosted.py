"""Hosted mode: mint short-lived ChatKit client secrets for the logged-in user.

With OpenAI-hosted ChatKit (Agent Builder workflows) the backend's only job is
``POST /chatkit/client_secret``: create a ChatKit session for the current user
through the official ``openai`` client and hand its ``client_secret`` to the
browser. The API key stays on the server; the user id is the app's stable user
id, never anything the client sends.

Which modes an app serves is chosen by config (like the seed design's
``ChatkitConfig``): ``CHATKIT_SELF_HOSTED`` (the ``/chatkit`` protocol and
uploads, on by default) and ``CHATKIT_HOSTED`` (client secrets; on by default
when ``CHATKIT_WORKFLOW_ID`` is set).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import typing as t

from .errors import ErrorCode
from .errors import RequestError

logger = logging.getLogger("flask_chatkit")

#: Bytes in a megabyte, OpenAI's unit for hosted file sizes.
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class HostedConfig:
    """The settings of hosted mode, read from the app config by :func:`read_modes`."""

    workflow_id: str
    api_key: str = dataclasses.field(repr=False)
    base_url: str | None = None
    #: Session lifetime in seconds (OpenAI's default, 10 minutes, when ``None``).
    expires_after: int | None = None
    #: Maximum requests per minute for the session (OpenAI's default when ``None``).
    rate_limit: int | None = None
    #: Whether the session may upload files (OpenAI's default, off, when ``None``).
    file_upload: bool | None = None
    max_files: int | None = None
    #: Maximum size of each uploaded file in megabytes (the API's unit).
    max_file_size: int | None = None
    timeout: float = 10.0
    max_retries: int = 2

    def session_params(self, user_id: str) -> dict[str, t.Any]:
        """The keyword arguments of ``client.beta.chatkit.sessions.create``."""
        params: dict[str, t.Any] = {"user": user_id, "workflow": {"id": self.workflow_id}}
        if self.expires_after is not None:
            params["expires_after"] = {"anchor": "created_at", "seconds": self.expires_after}
        if self.rate_limit is not None:
            params["rate_limits"] = {"max_requests_per_1_minute": self.rate_limit}
        upload: dict[str, t.Any] = {}
        if self.file_upload is not None:
            upload["enabled"] = self.file_upload
        if self.max_files is not None:
            upload["max_files"] = self.max_files
        if self.max_file_size is not None:
            upload["max_file_size"] = self.max_file_size
        if upload:
            params["chatkit_configuration"] = {"file_upload": upload}
        return params


def read_modes(
    values: t.Mapping[str, t.Any], cfg: t.Mapping[str, t.Any]
) -> tuple[bool, HostedConfig | None]:
    """``(self_hosted, hosted_config)`` from the coerced ``CHATKIT_*`` *values*
    (:func:`flask_chatkit.config.read`) and the app config *cfg* (the API key).

    :raises RuntimeError: hosted mode without a workflow id or without an API key.
    """
    workflow_id = values["CHATKIT_WORKFLOW_ID"] or ""
    hosted = values["CHATKIT_HOSTED"]
    if hosted is None:
        hosted = bool(workflow_id)
    if not hosted:
        return values["CHATKIT_SELF_HOSTED"], None
    if not workflow_id:
        raise RuntimeError(
            "CHATKIT_HOSTED is on but CHATKIT_WORKFLOW_ID is not set: set it to the "
            "Agent Builder workflow id (wf_...) that hosted sessions run."
        )
    api_key = cfg.get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise RuntimeError(
            "Hosted ChatKit mode needs an OpenAI API key: set OPENAI_API_KEY in the "
            "app config or the environment."
        )
    base_url = cfg.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None
    max_file_bytes = values["CHATKIT_SESSION_MAX_FILE_BYTES"]
    config = HostedConfig(
        workflow_id=workflow_id,
        api_key=str(api_key),
        base_url=base_url,
        file_upload=values["CHATKIT_SESSION_FILE_UPLOAD"],
        timeout=values["CHATKIT_OPENAI_TIMEOUT"],
        max_retries=values["CHATKIT_OPENAI_MAX_RETRIES"],
        expires_after=values["CHATKIT_SESSION_EXPIRES_AFTER"],
        rate_limit=values["CHATKIT_SESSION_RATE_LIMIT"],
        max_files=values["CHATKIT_SESSION_MAX_FILES"],
        # OpenAI takes whole megabytes
        max_file_size=None if max_file_bytes is None else math.ceil(max_file_bytes / MIB),
    )
    return values["CHATKIT_SELF_HOSTED"], config


class UpstreamError(RequestError):
    """OpenAI could not create a session: a 502 that names no secret or upstream body."""

    def __init__(self, message: str, code: str = ErrorCode.UPSTREAM_ERROR) -> None:
        super().__init__(message, code=code, status=502)


class SessionMinter:
    """Creates ChatKit sessions with one ``openai.OpenAI`` client per app."""

    def __init__(self, config: HostedConfig) -> None:
        import openai

        self.config = config
        self._lock = threading.Lock()
        self._client: t.Any = None
        if not hasattr(openai.resources.beta.Beta, "chatkit"):  # pragma: no cover
            # an openai release older than ChatKit
            raise RuntimeError(
                "Hosted ChatKit mode needs an openai release with "
                "client.beta.chatkit.sessions: pip install -U openai."
            )

    @property
    def client(self) -> t.Any:
        """The ``openai.OpenAI`` client, created on first use."""
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(
                    api_key=self.config.api_key,
                    base_url=self.config.base_url,
                    timeout=self.config.timeout,
                    max_retries=self.config.max_retries,
                )
            return self._client

    def mint(self, user_id: str, *, refresh: bool = False) -> dict[str, t.Any]:
        """A new session for *user_id*: ``{"client_secret", "expires_after", "expires_at"}``.

        A refresh (the client sends its ``current_client_secret`` when the old
        one nears expiry) also mints a new session for the same user: the old
        secret is simply left to expire.

        :raises UpstreamError: 502 when OpenAI is unreachable, slow or refuses.
        """
        import openai

        params = self.config.session_params(user_id)
        try:
            session = self.client.beta.chatkit.sessions.create(**params)
        except openai.APITimeoutError:
            logger.warning("ChatKit session request to OpenAI timed out.")
            raise UpstreamError(
                "OpenAI did not answer in time while creating a ChatKit session; try again.",
                code=ErrorCode.UPSTREAM_TIMEOUT,
            ) from None
        except openai.APIConnectionError:
            logger.warning("Could not connect to OpenAI to create a ChatKit session.")
            raise UpstreamError(
                "Could not reach OpenAI to create a ChatKit session; try again.",
                code=ErrorCode.UPSTREAM_UNREACHABLE,
            ) from None
        except openai.APIStatusError as error:
            # Log the status and request id only: upstream bodies may echo input.
            logger.warning(
                "OpenAI refused to create a ChatKit session: HTTP %s (request id %s).",
                error.status_code,
                error.request_id,
            )
            raise UpstreamError(
                f"OpenAI refused to create a ChatKit session (HTTP {error.status_code})."
            ) from None
        except openai.OpenAIError as error:
            logger.warning("OpenAI's ChatKit session answer was unusable: %s", type(error).__name__)
            raise UpstreamError("OpenAI's answer could not be read.") from None
        secret = getattr(session, "client_secret", None)
        expires_at = getattr(session, "expires_at", None)
        if not isinstance(secret, str) or not secret or not isinstance(expires_at, int):
            logger.warning("OpenAI's ChatKit session answer had no client secret or expiry.")
            raise UpstreamError("OpenAI's answer had no client secret.")
        logger.info(
            "Minted ChatKit session %s for user %r%s.",
            getattr(session, "id", "?"),
            user_id,
            " (refresh)" if refresh else "",
        )
        return {
            "client_secret": secret,
            "expires_after": max(0, expires_at - int(time.time())),
            "expires_at": expires_at,
        }


def mode_disabled(mode: str) -> RequestError:
    """The 404 of a route whose mode is switched off, naming the config that enables it."""
    if mode == "hosted":
        return RequestError(
            "Hosted ChatKit mode is off on this server: set CHATKIT_WORKFLOW_ID (and "
            "OPENAI_API_KEY) to mint client secrets, or CHATKIT_HOSTED = True.",
            code=ErrorCode.HOSTED_MODE_DISABLED,
            status=404,
        )
    return RequestError(
        "The self-hosted ChatKit protocol is off on this server: set "
        "CHATKIT_SELF_HOSTED = True to serve /chatkit and uploads.",
        code=ErrorCode.SELF_HOSTED_MODE_DISABLED,
        status=404,
    )


def parse_refresh(body: bytes) -> bool:
    """Whether the client asks for a refresh (``current_client_secret``); 400 if malformed.

    The body is optional (first calls send none). The current secret is never
    used for identity: the session is minted for the logged-in user.
    """
    import json

    if not body.strip():
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        raise RequestError(
            "The request body is not valid JSON.", code=ErrorCode.INVALID_JSON
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            "The request body must be a JSON object.", code=ErrorCode.INVALID_REQUEST
        )
    current = data.get("current_client_secret")
    if current is not None and not isinstance(current, str):
        raise RequestError(
            "current_client_secret must be a string or null.",
            code=ErrorCode.INVALID_REQUEST,
            field="current_client_secret",
        )
    return bool(current)


__all__ = [
    "HostedConfig",
    "SessionMinter",
    "UpstreamError",
    "mode_disabled",
    "parse_refresh",
    "read_modes",
]
