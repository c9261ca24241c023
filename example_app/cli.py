"""Command-line tools: ``flask --app example_app create-user`` and ``create-token``."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import with_appcontext

from .models import create_user
from .models import find_user
from .models import issue_token


@click.command("create-user")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_appcontext
def create_user_command(username: str, password: str) -> None:
    """Add a user who can log in with USERNAME and the password."""
    try:
        create_user(username, password)
    except sa.exc.IntegrityError:
        raise click.ClickException(f"User {username!r} already exists.") from None
    click.echo(f"Created user {username!r}.")


@click.command("create-token")
@click.argument("username")
@with_appcontext
def create_token_command(username: str) -> None:
    """Print a new bearer token for USERNAME (on the last line of output)."""
    user = find_user(username)
    if user is None:
        raise click.ClickException(f"No user {username!r}; add one with create-user.")
    token = issue_token(user)
    click.echo(f"New bearer token for {username!r} (shown once; send it as "
               "'Authorization: Bearer <token>'):")
    click.echo(token)


def register(app: Flask) -> None:
    """Add the commands to ``app.cli``."""
    app.cli.add_command(create_user_command)
    app.cli.add_command(create_token_command)


__all__ = ["register"]
