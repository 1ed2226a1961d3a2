"""
The dev stack's env file (``.devstack.env``, ``academy_devstack.envfile``): written with each value quoted for a
POSIX shell, and read back the same by its three readers: the dev stack (``envfile.parse``: ``devstack --wait``,
the tests, the bench), the app's standalone settings (``academy_consumer.settings._read_env_file``, which cannot
import the dev package) and ``sh`` itself (``. ./.devstack.env``).

The command itself writing such a file (a path with spaces included) is in tests/test_devstack.py.
"""

import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from academy_consumer.settings import _read_env_file
from academy_devstack import envfile

# What a shell variable can hold: any text without NUL (nor lone surrogates, which UTF-8 cannot write).
VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)

TRICKY = {
    "EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:40123,127.0.0.1:40124",
    "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL": "http://127.0.0.1:40125",
    "ACADEMY_CONSUMER_KAFKA_CONFIG": json.dumps({"session.timeout.ms": 6000, "fetch.wait.max.ms": 100}),
    "QUOTES": "it's \"quoted\"",
    "EXPANSIONS": "$HOME `id` $(id) ${X:-y} ~ a:~/b * ? [a] !",
    "WHITESPACE": " leading, tab\tand\nnew line ",
    "COMMENT": "#not a comment",
    "EMPTY": "",
    "BACKSLASH": "back\\slash\\",
    "EQUALS": "=a=b=",
    "UNICODE": "ünïcødé ✓",
}


@given(st.dictionaries(NAMES, VALUES, max_size=6))
@settings(max_examples=200, deadline=None)
def test_what_is_written_reads_back_the_same_in_the_dev_stack_and_the_settings(tmp_path_factory, values):
    path = envfile.write(tmp_path_factory.getbasetemp() / "roundtrip.devstack.env", values)  # each example rewrites it
    assert envfile.read(path) == values
    assert _read_env_file(path) == (values, None)


@pytest.mark.stack  # runs sh
def test_sh_sources_the_file_and_reads_the_same_values(tmp_path):
    path = envfile.write(tmp_path / "dev stack.env", TRICKY)
    names = sorted(TRICKY)
    script = r'. "$1"; shift; for name in "$@"; do eval "value=\${$name}"; printf "%s\0" "$value"; done'
    done = subprocess.run([shutil.which("sh"), "-c", script, "sh", path, *names], capture_output=True, check=True)
    assert done.stderr == b""
    assert dict(zip(names, done.stdout.decode("utf-8").split("\0"))) == TRICKY
    assert _read_env_file(path) == (TRICKY, None)


@pytest.mark.parametrize("text, says", [
    ("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:1\n", "No closing quotation"),
    ("precious data\n", "'precious' is not a NAME=value assignment"),
    ("1NAME=x\n", "'1NAME=x' is not a NAME=value assignment"),
])
def test_a_file_that_is_not_only_assignments_is_refused_by_both_readers(tmp_path, text, says):
    path = tmp_path / ".devstack.env"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=says):
        envfile.parse(text)
    values, error = _read_env_file(path)
    assert values == {} and says in error and str(path) in error and "academy-consumer devstack" in error


def test_no_file_is_no_values_and_no_error(tmp_path):
    assert _read_env_file(tmp_path / ".devstack.env") == ({}, None)
