"""Per-user rate limits and token budgets, counted in a shared store (no Flask here).

Two limits, both keyed on the authenticated user's id and both written in the
rate-limit notation of Flask-Limiter and ``limits`` (``"20 per minute; 500 per day"``):

- ``CHATKIT_RATE_LIMITS`` counts the requests that start a model turn
  (``threads.create``, ``threads.add_user_message``, ``threads.retry_after_item``,
  ``threads.custom_action``, ``threads.add_client_tool_output``,
  ``threads.add_structured_input``: every request answered with a stream);
- ``CHATKIT_TOKEN_BUDGET`` counts the model tokens the user's turns spend, as
  reported through :meth:`flask_chatkit.server.RequestContext.report_usage`.

Counts live in a ``limits`` storage (``CHATKIT_RATE_LIMIT_STORAGE``: ``memory://``
counts per process; ``redis://host:port/db`` shares the counts between every worker
and host). Windows are fixed ones (Flask-Limiter's default strategy) that start with
the first count: ``3 per minute`` lets three turns through in the minute after the
first one. Every count is one atomic increment in the storage, so two workers never
both take the last place.

:class:`Quotas` holds the rules. :meth:`Quotas.admit` is asked once a request is
known to start a turn and has passed every check, before anything is saved; a
:class:`Refusal` says why not and when to come back. A :class:`Meter` (one per
admitted turn) deducts the tokens the turn reports and remembers a budget whose
80 % this turn crossed, which :meth:`Meter.notices` then tells the user once per
budget window. A budget is checked when a turn starts, and a turn's tokens are known
only when its model calls end, so the last turn of a window may pass the budget;
the next one is refused.

A storage that cannot be reached lets turns through (a warning is logged): an
outage of the counter should not stop every conversation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing as t

from limits import RateLimitItem
from limits import parse_many
from limits.errors import StorageError
from limits.strategies import RateLimiter

from .i18n import Catalog
from .types import NoticeEvent

logger = logging.getLogger("flask_chatkit")

#: The share of a token budget past which the user is told (once per window).
NOTICE_SHARE = 0.8

Reason = t.Literal["rate", "tokens"]

# the first parts of the storage keys: LIMITER/chatkit-turns/<user>/3/1/minute
TURNS = "chatkit-turns"
TOKENS = "chatkit-tokens"

_TEXTS = Catalog()


def parse_limits(key: str, value: str) -> list[RateLimitItem]:
    """The limits written in *value* (``"20 per minute; 500 per day"``); empty: none.

    :raises RuntimeError: naming *key* when *value* is not rate-limit notation.
    """
    if not value.strip():
        return []
    try:
        return parse_many(value)
    except ValueError:
        raise RuntimeError(
            f"{key} must be limits like '20 per minute; 500 per day' "
            f"(Flask-Limiter's notation), not {value!r}."
        ) from None


def wait_text(seconds: float, locale: str | None = None) -> str:
    """*seconds* as the user reads a wait (``"5 minutes"``) in *locale*, rounded up:
    seconds below a minute, minutes below two hours, hours below two days, then days."""
    seconds = max(1, math.ceil(seconds))
    unit, count = "second", seconds
    for name, size, below in (("minute", 60, 7200), ("hour", 3600, 172800), ("day", 86400, 0)):
        if seconds >= size:
            unit, count = name, math.ceil(seconds / size)
        if seconds < below:
            break
    if count == 1:
        return _TEXTS.text(f"time.{unit}", locale)
    return _TEXTS.text(f"time.{unit}s", locale, n=count)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a turn was refused, and in how many seconds the user may write again."""

    #: ``"rate"`` (``CHATKIT_RATE_LIMITS``) or ``"tokens"`` (``CHATKIT_TOKEN_BUDGET``).
    reason: Reason
    #: Whole seconds until the limit lets a turn through again (at least 1).
    retry_after: int
    #: The limit that refused it.
    limit: RateLimitItem

    def message(self, locale: str | None = None) -> str:
        """What the user is told, in *locale*: when they can write again."""
        key = "quota.rate" if self.reason == "rate" else "quota.tokens"
        return _TEXTS.text(key, locale, wait=wait_text(self.retry_after, locale))


class Quotas:
    """The rate limits and token budgets of one app, on a shared ``limits`` storage.

    :param limiter: a fixed-window strategy on the storage (the extension takes
        Flask-Limiter's, see :attr:`flask_limiter.Limiter.limiter`).
    :param rates: the limits on turns per user (``CHATKIT_RATE_LIMITS``).
    :param budget: the limits on tokens per user (``CHATKIT_TOKEN_BUDGET``).
    :param clock: the time now, in seconds since the epoch (the storage's clock).
    :param key_prefix: put before every key (Flask-Limiter's ``RATELIMIT_KEY_PREFIX``),
        so that apps sharing one storage keep their counts apart.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        rates: t.Sequence[RateLimitItem] = (),
        budget: t.Sequence[RateLimitItem] = (),
        *,
        clock: t.Callable[[], float] = time.time,
        key_prefix: str = "",
    ) -> None:
        self.limiter = limiter
        self.turns = f"{key_prefix}/{TURNS}" if key_prefix else TURNS
        self.tokens = f"{key_prefix}/{TOKENS}" if key_prefix else TOKENS
        # the shortest window first, as Flask-Limiter checks them
        self.rates = sorted(rates)
        self.budget = sorted(budget)
        self.clock = clock

    def admit(self, user_id: str) -> Refusal | None:
        """Count a turn of *user_id*; ``None`` if it may run, else why not.

        A user over budget is refused without counting the turn; otherwise the
        turn counts against every rate limit up to the first that refuses it.
        """
        try:
            return self._admit(_key(user_id))
        except StorageError as exc:
            logger.warning(
                "The rate limit storage failed (%s): a turn is let through uncounted.",
                type(exc.storage_error).__name__,
            )
            return None

    def _admit(self, user: str) -> Refusal | None:
        spent = [item for item in self.budget if not self.limiter.test(item, self.tokens, user)]
        if spent:
            return self._refusal("tokens", spent, user, self.tokens)
        for item in self.rates:
            if not self.limiter.hit(item, self.turns, user):
                # the user may also be out of a longer window: name the last one to open
                full = [i for i in self.rates if not self.limiter.test(i, self.turns, user)]
                return self._refusal("rate", full or [item], user, self.turns)
        return None

    def _refusal(
        self, reason: Reason, items: list[RateLimitItem], user: str, scope: str
    ) -> Refusal:
        now = self.clock()
        waits = [
            (self.limiter.get_window_stats(item, scope, user).reset_time - now, item)
            for item in items
        ]
        wait, item = max(waits, key=lambda pair: pair[0])
        return Refusal(reason, max(1, math.ceil(wait)), item)

    def give_back(self, user_id: str) -> None:
        """Uncount an admitted turn of *user_id* that never ran (refused by the core:
        a busy thread, too many running turns)."""
        user = _key(user_id)
        try:
            for item in self.rates:
                self.limiter.storage.incr(item.key_for(self.turns, user), item.get_expiry(), -1)
        except StorageError as exc:
            logger.warning(
                "The rate limit storage failed (%s): a refused turn stays counted.",
                type(exc.storage_error).__name__,
            )

    def meter(self, user_id: str, locale: str | None = None) -> Meter:
        """A usage listener for one turn of *user_id* (see :class:`Meter`)."""
        return Meter(self, user_id, locale)

    def spend(self, user_id: str, tokens: int) -> list[tuple[RateLimitItem, int]]:
        """Deduct *tokens* from every budget of *user_id*; the budgets whose
        :data:`NOTICE_SHARE` these tokens crossed, with the share of each now used
        (in whole percent)."""
        user = _key(user_id)
        crossed = []
        for item in self.budget:
            # the fixed-window strategy's hit, keeping the count it returns: which
            # spend crosses the line is decided by one atomic increment, so exactly
            # one turn per window sees it, whichever worker runs it
            used = self.limiter.storage.incr(
                item.key_for(self.tokens, user), item.get_expiry(), amount=tokens
            )
            line = item.amount * NOTICE_SHARE
            if used - tokens < line <= used:
                crossed.append((item, min(100, math.floor(used * 100 / item.amount))))
        return crossed

    def reset_in(self, item: RateLimitItem, user_id: str) -> float:
        """Seconds until the budget *item* of *user_id* starts a new window."""
        stats = self.limiter.get_window_stats(item, self.tokens, _key(user_id))
        return stats.reset_time - self.clock()


class Meter:
    """Deducts one turn's tokens from its user's budgets as they are reported.

    Add it to ``context.usage_listeners``; once the turn's events have all gone
    out, :meth:`notices` tells the user of a budget whose 80 % the turn crossed.
    """

    def __init__(self, quotas: Quotas, user_id: str, locale: str | None) -> None:
        self.quotas = quotas
        self.user_id = user_id
        self.locale = locale
        self.crossed: list[tuple[RateLimitItem, int]] = []

    def __call__(
        self, context: t.Any, input_tokens: int, output_tokens: int, model: str | None
    ) -> None:
        tokens = input_tokens + output_tokens
        if tokens <= 0 or not self.quotas.budget:
            return
        try:
            self.crossed += self.quotas.spend(self.user_id, tokens)
        except StorageError as exc:  # usage reporting must never break the turn
            logger.warning(
                "The rate limit storage failed (%s): %d tokens were not counted.",
                type(exc.storage_error).__name__,
                tokens,
            )

    def notices(self) -> t.Iterator[NoticeEvent]:
        """One ``notice`` per budget whose 80 % this turn crossed."""
        for item, percent in self.crossed:
            try:
                wait = self.quotas.reset_in(item, self.user_id)
            except StorageError:
                wait = item.get_expiry()
            text = _TEXTS.text(
                "quota.notice", self.locale, percent=percent, wait=wait_text(wait, self.locale)
            )
            yield NoticeEvent(level="warning", message=text)


def _key(user_id: str) -> str:
    """*user_id* as a part of a storage key (``limits`` joins the parts with ``/``)."""
    return str(user_id).replace("%", "%25").replace("/", "%2F")


__all__ = ["NOTICE_SHARE", "Meter", "Quotas", "Refusal", "parse_limits", "wait_text"]
