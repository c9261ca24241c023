"""Command-line tools: ``flask --app example_app create-user``, ``set-password``
and ``create-token``.

Each checks the database first, so that a server database that was never
migrated, or one that cannot be reached, gets one line saying what to do
(exit code 1) instead of a driver traceback.
"""

from __future__ import annotations

import functools
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import with_appcontext

from .extensions import db
from .models import User
from .models import create_user
from .models import find_user
from .models import issue_token
from .models import set_password

#: The command that creates (or updates) the tables of a server database.
UPGRADE_COMMAND = "flask --app example_app db upgrade heads"

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def needs_tables(command: F) -> F:
    """Run *command* only once the app's tables exist and the database answers.

    :raises click.ClickException: saying to run :data:`UPGRADE_COMMAND`, or
        that the database is unreachable (with the driver's first line).
    """

    @functools.wraps(command)
    def checked(*args: t.Any, **kwargs: t.Any) -> t.Any:
        from . import describe  # the package imports this module

        try:
            ready = sa.inspect(db.engine).has_table(User.__tablename__)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise click.ClickException(f"The database is unreachable ({describe(exc)}).")
        if not ready:
            raise click.ClickException(
                f"The database has no tables yet: run '{UPGRADE_COMMAND}' first."
            )
        return command(*args, **kwargs)

    return t.cast(F, checked)


def ask_password(prompt: str) -> str:
    """Ask for a password twice, hidden; asked only after the database checks passed."""
    password: str = click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    if not password.strip():
        raise click.ClickException("The password must not be empty.")
    return password


@click.command("create-user")
@click.argument("username")
@click.option("--password", help="The password (asked for when not given).")
@with_appcontext
@needs_tables
def create_user_command(username: str, password: str | None) -> None:
    """Add a user who can log in with USERNAME and the password."""
    try:
        create_user(username, password or ask_password("Password"))
    except sa.exc.IntegrityError:
        raise click.ClickException(f"User {username!r} already exists.") from None
    click.echo(f"Created user {username!r}.")


@click.command("set-password")
@click.argument("username")
@click.option("--password", help="The new password (asked for when not given).")
@with_appcontext
@needs_tables
def set_password_command(username: str, password: str | None) -> None:
    """Give USERNAME a new password (e.g. the demo user, whose first password
    is printed only once)."""
    if find_user(username) is None:
        raise click.ClickException(f"No user {username!r}; add one with create-user.")
    if not set_password(username, password or ask_password("New password")):
        raise click.ClickException(f"No user {username!r}; add one with create-user.")
    click.echo(f"Password of {username!r} changed.")


@click.command("create-token")
@click.argument("username")
@with_appcontext
@needs_tables
def create_token_command(username: str) -> None:
    """Print a new bearer token for USERNAME (on the last line of output)."""
    user = find_user(username)
    if user is None:
        raise click.ClickException(f"No user {username!r}; add one with create-user.")
    token = issue_token(user)
    click.echo(
        f"New bearer token for {username!r} (shown once; send it as "
        "'Authorization: Bearer <token>'):"
    )
    click.echo(token)


def register(app: Flask) -> None:
    """Add the commands to ``app.cli``."""
    app.cli.add_command(create_user_command)
    app.cli.add_command(set_password_command)
    app.cli.add_command(create_token_command)


__all__ = ["UPGRADE_COMMAND", "needs_tables", "register"]
