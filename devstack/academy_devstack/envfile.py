"""
The dev stack's env file (``.devstack.env``): one ``NAME=value`` line per setting, each value quoted for a
POSIX shell (``shlex.quote``: a value of plain characters as it is, any other in single quotes), so that
``. ./.devstack.env`` in sh, dash or bash assigns exactly the values the commands read::

    EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:40123
    EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=http://127.0.0.1:40125
    ACADEMY_CONSUMER_KAFKA_CONFIG='{"session.timeout.ms": 6000, ...}'

It is read back as a POSIX shell reads it (``shlex.split``, POSIX mode, ``#`` comments). The app's standalone
settings (``academy_consumer.settings``) read it with the same rule in their own few lines, since the app never
imports this package; tests/test_devstack.py checks this module, those settings and ``sh`` agree.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import Mapping, Union

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a shell variable name


def format_lines(values: Mapping[str, str]) -> list[str]:
    """``NAME=value`` lines of ``values``, each value quoted for a POSIX shell."""
    return [f"{name}={shlex.quote(str(value))}" for name, value in values.items()]


def parse(text: str) -> dict:
    """
    ``{NAME: value}`` of an env file's text, as a POSIX shell assigns them. ``ValueError`` (one line) for a
    text that is not only ``NAME=value`` assignments: unbalanced quotes, or a word that is no assignment.
    """
    values = {}
    for word in shlex.split(text, comments=True):
        name, equals, value = word.partition("=")
        if not equals or not _NAME.fullmatch(name):
            raise ValueError(f"{word[:40]!r} is not a NAME=value assignment")
        values[name] = value
    return values


def read(path: Union[str, os.PathLike], max_bytes: int = 1024 * 1024) -> dict:
    """
    :func:`parse` of the file at ``path`` (its first ``max_bytes``), its bytes as they are: no newline
    translation, which would turn a quoted ``\\r`` into ``\\n``. ``OSError``, ``UnicodeDecodeError`` or
    ``ValueError`` when it cannot be read or is not an env file.
    """
    with open(path, "rb") as handle:
        return parse(handle.read(max_bytes).decode("utf-8"))


def write(path: Union[str, os.PathLike], values: Mapping[str, str]) -> str:
    """
    Write ``values`` to ``path`` whole or not at all (through ``<path>.partial``), so that a reader never
    sees half of it; ``OSError`` when it cannot be written (no partial file is left). Returns the path.
    """
    path = os.fspath(path)
    partial = f"{path}.partial"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            handle.write("\n".join(format_lines(values)) + "\n")
        os.replace(partial, path)
    except OSError:
        try:
            os.remove(partial)
        except OSError:
            pass
        raise
    return path
