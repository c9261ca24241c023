"""``flask chatkit ...``: feedback export and data lifecycle commands.

Long jobs show a progress bar when standard error is a terminal.

Each command works on the store of the app it runs in and prints what it did.
Attachment bytes are deleted through the app's attachments (its Storage).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sys
import tempfile
import typing as t
import zipfile
from datetime import datetime
from datetime import timedelta

import click
from click.core import ParameterSource
from flask.cli import AppGroup

from .server import RequestContext
from .storage import CHUNK_SIZE
from .storage import check_key
from .types import utcnow

if t.TYPE_CHECKING:
    from .extension import State

FEEDBACK_FIELDS = ("user_id", "thread_id", "item_id", "kind", "created_at")
#: The JSON lines' name inside an export zip, and the folder of the attachment bytes.
LINES_NAME = "data.jsonl"
FILES_FOLDER = "files"
#: Threads and items read per store call while exporting.
PAGE = 100

T = t.TypeVar("T")


def _cutoff(**ago: float) -> datetime:
    """Now minus *ago* (``days=`` or ``hours=``); a usage error for --older-than
    values no date can hold (nan, inf, before year 1)."""
    try:
        return utcnow() - timedelta(**ago)
    except (OverflowError, ValueError):
        ((unit, amount),) = ago.items()
        raise click.BadParameter(
            f"{amount} is not a usable number of {unit}.", param_hint="'--older-than'"
        ) from None


@contextlib.contextmanager
def _progress(items: t.Sequence[T], label: str) -> t.Iterator[t.Iterable[T]]:
    """*items*, with a progress bar on standard error when it is a terminal (never
    in a pipe, a cron mail or a test)."""
    if len(items) < 2 or not sys.stderr.isatty():
        yield items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield bar


def _delete_bytes(files: t.Any, attachments: t.Sequence[t.Any]) -> None:
    if files is None:
        return
    with _progress(attachments, "Deleting files") as bar:
        for attachment in bar:
            # Administrative deletions have no request: the context is None.
            files.delete_attachment(attachment, None)


def _wire(model: t.Any) -> t.Any:
    """A wire model as the protocol's JSON (nulls left out), as a plain value."""
    return model.model_dump(mode="json", exclude_none=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class UserExport:
    """One user's ChatKit data as JSON lines: ``thread``, ``item``, ``attachment``
    and ``feedback`` records (each a JSON object with a ``type``), threads with
    their items oldest first. With *files*, the attachment bytes go into a zip
    beside the lines (``files/<attachment id>``)."""

    def __init__(self, store: t.Any, files: t.Any, user_id: str) -> None:
        self.store = store
        self.files = files
        self.user_id = user_id
        self.context = RequestContext(user_id=user_id)
        self.counts = {"thread": 0, "item": 0, "attachment": 0, "feedback": 0}
        self.stored_files: dict[str, str] = {}  # attachment id -> path in the zip

    def threads(self) -> list[t.Any]:
        out: list[t.Any] = []
        after = None
        while True:
            page = self.store.load_threads(PAGE, after, "asc", self.context)
            out.extend(page.data)
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id

    def records(self, threads: list[t.Any], attachments: list[t.Any]) -> t.Iterator[t.Any]:
        with _progress(threads, "Exporting threads") as bar:
            for thread in bar:
                yield {"type": "thread", "thread": _wire(thread)}
                after = None
                while True:
                    page = self.store.load_thread_items(
                        thread.id, after, PAGE, "asc", self.context, include_hidden=True
                    )
                    for item in page.data:
                        yield {"type": "item", "thread_id": thread.id, "item": _wire(item)}
                    if not page.has_more or not page.data:
                        break
                    after = page.data[-1].id
        for attachment in attachments:
            record = {"type": "attachment", "attachment": _wire(attachment)}
            if attachment.id in self.stored_files:
                record["file"] = self.stored_files[attachment.id]
            yield record
        for vote in self.store.export_feedback(self.user_id):
            yield {
                "type": "feedback",
                **{k: vote[k] for k in ("thread_id", "item_id", "kind")},
                "created_at": vote["created_at"].isoformat(),
            }

    def write_lines(self, out: t.IO[bytes], records: t.Iterable[t.Any]) -> None:
        for record in records:
            self.counts[record["type"]] += 1
            out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")

    def copy_files(self, archive: zipfile.ZipFile, attachments: list[t.Any]) -> None:
        """Each attachment's bytes as ``files/<id>`` (the server-made id, checked
        like a storage key: never the client's file name)."""
        with _progress(attachments, "Copying files") as bar:
            for attachment in bar:
                try:
                    source = self.files.open(attachment.id)
                except FileNotFoundError:  # never uploaded, or the bytes are gone
                    continue
                name = f"{FILES_FOLDER}/{check_key(attachment.id)}"
                with source, archive.open(name, "w", force_zip64=True) as target:
                    shutil.copyfileobj(source, target, CHUNK_SIZE)
                self.stored_files[attachment.id] = name

    def summary(self) -> str:
        return ", ".join(
            [
                _plural(self.counts["thread"], "thread"),
                _plural(self.counts["item"], "item"),
                _plural(self.counts["attachment"], "attachment"),
                _plural(self.counts["feedback"], "feedback vote"),
            ]
        )


def _check_output(path: str, files: bool) -> str:
    """*path* made absolute, in a folder that exists (and a ``.zip`` with --files)."""
    hint = "'--output' / '-o'"
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise click.BadParameter(f"the folder {folder!r} does not exist.", param_hint=hint)
    if files and not full.lower().endswith(".zip"):
        raise click.BadParameter(
            "with --files the export is a zip archive: name it *.zip.", param_hint=hint
        )
    return full


def build_cli(state: State) -> AppGroup:
    """``flask chatkit`` for one app, working on *state* (its store and settings)."""
    group = AppGroup("chatkit", help="Manage ChatKit data (feedback, retention).")

    @group.command("export-feedback")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["jsonl", "csv"]),
        default="jsonl",
        show_default=True,
        help="JSON lines or CSV with a header row.",
    )
    @click.option(
        "--output",
        "-o",
        type=click.File("w", encoding="utf-8"),
        default="-",
        help="File to write (default: standard output).",
    )
    @click.option("--user", "user_id", default=None, help="Only this user's votes.")
    def export_feedback(fmt: str, output: t.TextIO, user_id: str | None) -> None:
        """Write every feedback vote (user, thread, item, kind, time), oldest first."""
        votes = state.server.store.export_feedback(user_id)
        rows = [{**v, "created_at": v["created_at"].isoformat()} for v in votes]
        if fmt == "csv":
            writer = csv.DictWriter(output, fieldnames=FEEDBACK_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: row[k] for k in FEEDBACK_FIELDS} for row in rows)
        else:
            for row in rows:
                output.write(json.dumps({k: row[k] for k in FEEDBACK_FIELDS}) + "\n")
        # (click.get_text_stream is deprecated: ask where --output came from instead)
        if (
            click.get_current_context().get_parameter_source("output")
            is not ParameterSource.DEFAULT
        ):
            click.echo(f"Exported {len(rows)} feedback votes.", err=True)

    @group.command("delete-user-data")
    @click.argument("user_id")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def delete_user_data(user_id: str, yes: bool) -> None:
        """Delete all ChatKit data of USER_ID: threads, items, attachments with their
        bytes, and feedback votes."""
        if not yes:
            click.confirm(f"Delete all ChatKit data of user {user_id!r}?", abort=True)
        removed = state.server.store.delete_user_data(user_id)
        _delete_bytes(state.server.attachments, removed.attachments)
        click.echo(f"Removed {removed.summary()} of user {user_id!r}.")

    @group.command("export-user-data")
    @click.argument("user_id")
    @click.option(
        "--output",
        "-o",
        "output",
        required=True,
        type=click.Path(dir_okay=False),
        help="File to write: JSON lines, or with --files a .zip archive.",
    )
    @click.option(
        "--files",
        is_flag=True,
        help=f"Also the attachment bytes: a zip holding {LINES_NAME} and "
        f"{FILES_FOLDER}/<attachment id>.",
    )
    def export_user_data(user_id: str, output: str, files: bool) -> None:
        """Write all ChatKit data of USER_ID (threads, items, attachment records,
        feedback votes) as JSON lines, one object with a "type" a line; the
        counterpart of delete-user-data."""
        path = _check_output(output, files)
        storage = state.server.attachments
        if files and not callable(getattr(storage, "open", None)):
            raise click.UsageError("--files needs attachments that can read bytes back.")
        export = UserExport(state.server.store, storage, user_id)
        threads = export.threads()
        attachments = export.store.load_user_attachments(user_id)
        # a temporary file beside the target, renamed at the end: never half an export
        handle, partial = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                if files:
                    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                        export.copy_files(archive, attachments)
                        with archive.open(LINES_NAME, "w", force_zip64=True) as lines:
                            export.write_lines(lines, export.records(threads, attachments))
                else:
                    export.write_lines(out, export.records(threads, attachments))
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        if not any(export.counts.values()):
            click.echo(f"User {user_id!r} has no ChatKit data: wrote an empty export to {path}.")
            return
        copied = f" and the bytes of {_plural(len(export.stored_files), 'file')}" if files else ""
        click.echo(f"Exported {export.summary()}{copied} of user {user_id!r} to {path}.")

    @group.command("purge-threads")
    @click.option(
        "--older-than",
        "days",
        type=click.FloatRange(min=0),
        required=True,
        help="Days without activity (no update, no new item).",
    )
    def purge_threads(days: float) -> None:
        """Delete threads idle for more than --older-than days, with their items,
        votes and attachments (bytes included)."""
        cutoff = _cutoff(days=days)
        removed = state.server.store.purge_threads(cutoff)
        _delete_bytes(state.server.attachments, removed.attachments)
        click.echo(f"Removed {removed.summary()} idle since {cutoff.isoformat()}.")

    @group.command("cleanup-attachments")
    @click.option(
        "--older-than",
        "hours",
        type=click.FloatRange(min=0),
        default=None,
        help="Hours since creation (default: CHATKIT_ATTACHMENT_CLEANUP_AGE, one day).",
    )
    def cleanup_attachments(hours: float | None) -> None:
        """Delete attachments uploaded or created but never sent in a message, older
        than --older-than hours: records first, then the bytes of the records this
        run deleted (safe to run from cron on several hosts at once)."""
        if hours is None:
            hours = state.config["CHATKIT_ATTACHMENT_CLEANUP_AGE"] / 3600
        cutoff = _cutoff(hours=hours)
        removed = state.server.store.delete_stale_attachments(cutoff)
        _delete_bytes(state.server.attachments, removed)
        for attachment in removed:
            click.echo(f"Removed {attachment.id} ({attachment.name}).")
        click.echo(
            f"Removed {len(removed)} unsent attachment{'s' if len(removed) != 1 else ''} "
            f"created before {cutoff.isoformat()}."
        )

    return group


__all__ = ["FEEDBACK_FIELDS", "UserExport", "build_cli"]
