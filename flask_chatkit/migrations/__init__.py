"""Alembic revisions of the ChatKit tables (branch label ``chatkit``).

The revision scripts live in ``versions/``; an app that uses Flask-Migrate
picks them up with :func:`flask_chatkit.migrate.register_migrations`.
"""
