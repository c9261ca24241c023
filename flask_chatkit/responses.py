"""Deprecated alias of :mod:`flask_chatkit.streaming`, this module's former name.

Import from :mod:`flask_chatkit.streaming` (or ``from flask_chatkit import
stream_text, progress, widget_item``) instead; this alias may go in a later
release. It defines nothing of its own, hence no ``__all__``.
"""

from .streaming import MessageStream as MessageStream
from .streaming import new_item_id as new_item_id
from .streaming import progress as progress
from .streaming import stream_text as stream_text
from .streaming import user_text as user_text
from .streaming import widget_item as widget_item
