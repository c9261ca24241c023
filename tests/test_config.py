"""One configuration table (``flask_chatkit/config.py``) and one rule for reading it.

The README's tables are generated from the table; every key's value is coerced
the same way at ``init_app``, and a value that breaks the rule stops the app
naming the key.
"""

from __future__ import annotations

import re
import typing as t

import pytest

from flask_chatkit import config
from flask_chatkit.extension import DEFAULTS

from .conftest import make_app
from .servers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"<!-- config table: (\w+) [^>]*-->\n(.*?)\n<!-- end config table -->", re.S)


def test_the_readmes_tables_are_the_config_tables() -> None:
    blocks = dict(BLOCK.findall(README))
    assert set(blocks) == {"core", "assistant", "hosted"}
    for section, table in blocks.items():
        assert table == config.markdown_table(section), (
            f"README's {section} table is out of date: paste config.markdown_table({section!r})"
        )
    documented = set(re.findall(r"^\| `(CHATKIT_\w+)` \|", README, re.M))
    library = {key.name for key in config.KEYS}
    assert library <= documented


def test_every_key_has_a_meaning_and_the_extension_sets_every_default() -> None:
    assert set(DEFAULTS) == {key.name for key in config.KEYS}
    for key in config.KEYS:
        assert key.meaning and key.name.startswith("CHATKIT_"), key
        assert key.coerce(None) == key.default  # the default passes its own rule
        if key.kind in ("int", "float"):
            assert key.unit in ("s", "bytes", ""), key


BOOLS = [key for key in config.KEYS if key.kind == "bool"]
NUMBERS = [key for key in config.KEYS if key.kind in ("int", "float")]


@pytest.mark.parametrize("key", BOOLS, ids=lambda key: key.name)
def test_every_boolean_takes_the_same_words_and_refuses_others(key: config.Key) -> None:
    for word, value in [
        ("true", True),
        ("On", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("OFF", False),
        ("0", False),
        ("no", False),
    ]:
        assert key.coerce(word) is value
    assert key.coerce("") == key.default
    for bad in ("nope", "2", 2, "maybe"):
        with pytest.raises(RuntimeError, match=key.name):
            key.coerce(bad)


@pytest.mark.parametrize("key", NUMBERS, ids=lambda key: key.name)
def test_every_number_follows_one_rule_for_zero_and_negatives(key: config.Key) -> None:
    assert key.coerce("7") == 7 and key.coerce(7) == 7
    for bad in ("-1", -1, "nan", "inf", "seven", True):
        with pytest.raises(RuntimeError, match=key.name):
            key.coerce(bad)
    if key.zero_is_off:
        assert key.coerce("0") == 0
    else:
        with pytest.raises(RuntimeError, match=f"{key.name} must be more than 0"):
            key.coerce("0")
    if key.kind == "int":
        with pytest.raises(RuntimeError, match=key.name):
            key.coerce("2.5")


def test_older_names_are_still_read_in_their_own_unit() -> None:
    values = config.read(
        {"CHATKIT_ATTACHMENT_CLEANUP_HOURS": "2", "CHATKIT_SESSION_MAX_FILE_SIZE": 3}
    )
    assert values["CHATKIT_ATTACHMENT_CLEANUP_AGE"] == 7200
    assert values["CHATKIT_SESSION_MAX_FILE_BYTES"] == 3 * 1024 * 1024
    newer = config.read(
        {"CHATKIT_ATTACHMENT_CLEANUP_HOURS": "2", "CHATKIT_ATTACHMENT_CLEANUP_AGE": 60}
    )
    assert newer["CHATKIT_ATTACHMENT_CLEANUP_AGE"] == 60


@pytest.mark.parametrize(
    "key, value",
    [
        ("CHATKIT_TITLES", "nope"),  # once silently true
        ("CHATKIT_HOSTED", "nope"),
        ("CHATKIT_PAGE_SIZE", "0"),  # once "use the default"
        ("CHATKIT_DISCONNECT", "later"),
        ("CHATKIT_MODEL_API", "completions"),
    ],
)
def test_a_bad_value_stops_the_app_at_start_up_naming_the_key(
    tmp_path: t.Any, key: str, value: str
) -> None:
    with pytest.raises(RuntimeError, match=key):
        make_app("memory", tmp_path, **{key: value})


def test_importing_the_package_does_not_load_the_openai_client() -> None:
    # the responder stack (0.5 s of a 0.85 s import) loads when a model is first called
    import subprocess
    import sys

    code = "import sys, flask_chatkit; print(sorted(m for m in sys.modules if m == 'openai'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
