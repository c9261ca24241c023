"""Watching a running turn from another request: the re-attach stream (no Flask here).

``GET {prefix}/threads/<id>/events`` streams the thread's running turn to a
client that did not start it (a reloaded page, a second tab, another device):
first a ``thread.item.added`` for each of the turn's items as it stands, then
the turn's events as they happen, ending as the turn's own stream ends, with a
``thread.updated`` that gives the thread back its own status (a watcher loaded
it shown as locked).

Two sources, one shape of stream:

- :func:`follow_running`: the turn runs in this process; its watchers get the
  very events its client gets (:class:`~flask_chatkit.turns.Feed`).
- :func:`follow_stored`: it runs in another process or host; the stored
  checkpoints are looked at every checkpoint interval and what changed is sent
  as the events that make the same change (text deltas, added, replaced and
  removed items), until the turn's lease is given back.
"""

from __future__ import annotations

import time
import typing as t

from .turns import END
from .types import AssistantMessageContentPartAdded
from .types import AssistantMessageContentPartTextDelta
from .types import AssistantMessageItem
from .types import ThreadItemAddedEvent
from .types import ThreadItemDoneEvent
from .types import ThreadItemRemovedEvent
from .types import ThreadItemReplacedEvent
from .types import ThreadItemUpdatedEvent
from .types import ThreadUpdatedEvent
from .types import client_thread

if t.TYPE_CHECKING:
    from .store import Store
    from .turns import Running
    from .types import ThreadMetadata

#: Items read per look at a turn run elsewhere (a turn's own output is far fewer).
WINDOW = 50


def follow_running(running: Running) -> t.Generator[t.Any, None, None]:
    """The events of *running* (a turn of this process) for one more watcher."""
    items, feed = running.watch()
    try:
        for item in items:
            yield ThreadItemAddedEvent(item=item)
        last = None
        while (event := feed.get()) is not END:
            last = event
            yield event
        if feed.overflowed:  # fell behind: end here, the client may attach again
            return
        if type(last) is not ThreadUpdatedEvent:
            yield ThreadUpdatedEvent(thread=client_thread(running.thread))
    finally:
        running.unwatch(feed)


def follow_stored(
    store: Store[t.Any],
    thread: ThreadMetadata,
    context: t.Any,
    interval: float,
    *,
    sleep: t.Callable[[float], t.Any] = time.sleep,
) -> t.Generator[t.Any, None, None]:
    """The events of the turn running on *thread* in another process, read from
    its checkpoints every *interval* seconds until the turn ends."""
    anchor, items, _ = _turn_items(store, thread.id, None, context)
    seen = {item.id: item for item in items}
    for item in items:
        yield ThreadItemAddedEvent(item=item)
    while True:
        sleep(interval)
        thread, live = store.load_thread_and_turn(thread.id, context)
        _, items, later = _turn_items(store, thread.id, anchor, context)
        yield from changes(seen, items)
        seen = {item.id: item for item in items}
        if not live or later:
            break
    for item in items:
        yield ThreadItemDoneEvent(item=item)
    yield ThreadUpdatedEvent(thread=client_thread(thread))


def _turn_items(
    store: Store[t.Any], thread_id: str, anchor: str | None, context: t.Any
) -> tuple[str | None, list[t.Any], bool]:
    """The turn's items (oldest first) after *anchor*, the user message the turn
    answers (``None``: the thread's last user message, returned first), and
    whether a later turn started (its user message, and what follows, left out)."""
    page = store.load_thread_items(thread_id, None, WINDOW, "desc", context, include_hidden=False)
    newest_first = []
    for item in page.data:
        if item.id == anchor or (anchor is None and item.type == "user_message"):
            anchor = item.id
            break
        newest_first.append(item)
    items = newest_first[::-1]
    for index, item in enumerate(items):
        if item.type == "user_message":
            return anchor, items[:index], True
    return anchor, items, False


def changes(seen: t.Mapping[str, t.Any], items: t.Sequence[t.Any]) -> list[t.Any]:
    """The events that turn the items *seen* (by id) into *items*."""
    events: list[t.Any] = []
    for item in items:
        before = seen.get(item.id)
        if before is None:
            events.append(ThreadItemAddedEvent(item=item))
        elif before != item:
            events.extend(_updates(before, item))
    ids = {item.id for item in items}
    events.extend(ThreadItemRemovedEvent(item_id=item_id) for item_id in seen if item_id not in ids)
    return events


def _updates(before: t.Any, after: t.Any) -> list[t.Any]:
    """Text deltas and new parts when *after* only grew from *before* (a message
    streaming on), else the whole item replaced."""
    if isinstance(before, AssistantMessageItem) and isinstance(after, AssistantMessageItem):
        events: list[t.Any] = []
        for index, part in enumerate(after.content):
            if index >= len(before.content):
                update: t.Any = AssistantMessageContentPartAdded(content_index=index, content=part)
            else:
                old = before.content[index]
                if not part.text.startswith(old.text) or part.annotations != old.annotations:
                    break
                if len(part.text) == len(old.text):
                    continue
                update = AssistantMessageContentPartTextDelta(
                    content_index=index, delta=part.text[len(old.text) :]
                )
            events.append(ThreadItemUpdatedEvent(item_id=after.id, update=update))
        else:
            if len(after.content) >= len(before.content):
                return events
    return [ThreadItemReplacedEvent(item=after)]


__all__ = ["WINDOW", "changes", "follow_running", "follow_stored"]
