"""``flask chatkit ...``: feedback export and data lifecycle commands.

Each command works on the store of the app it runs in and prints what it did.
Attachment bytes are deleted through the app's attachments (its Storage).
"""

from __future__ import annotations

import csv
import json
import typing as t
from datetime import datetime
from datetime import timedelta

import click
from click.core import ParameterSource
from flask.cli import AppGroup

from .types import utcnow

if t.TYPE_CHECKING:
    from .extension import State

FEEDBACK_FIELDS = ("user_id", "thread_id", "item_id", "kind", "created_at")


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


def _delete_bytes(files: t.Any, attachments: t.Iterable[t.Any]) -> None:
    if files is None:
        return
    for attachment in attachments:
        # Administrative deletions have no request: the context is None.
        files.delete_attachment(attachment, None)


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


__all__ = ["FEEDBACK_FIELDS", "build_cli"]
