"""
The one reader of JSON input files (``reconcile_academies --from-file``, ``produce_academy_event --file``).

An input is either one JSON document (an academy, a list, or an envelope) or JSON lines: one JSON value
per line. It is told apart by its first non-blank line: when that line is a complete JSON value on its own
and more non-blank lines follow, the input is JSON lines, parsed line by line as it is read; otherwise it
is one document. Blank lines between JSON lines are ignored.

Resources are bounded: at most ``ACADEMY_MAX_INPUT_BYTES`` (``conf.max_input_bytes()``) are read, in
chunks of ``CHUNK_BYTES`` (a regular file larger than that is refused before reading; ``/dev/zero`` or a
pipe stops at the limit). Bytes must be UTF-8 (decoded strictly: never silently replaced). Every failure
is an :class:`InputError` whose message is one readable line naming the input.
"""

import json
import os
import sys

from academy_consumer import conf
from academy_consumer.normalize import extract_items

CHUNK_BYTES = 1024 * 1024
# The most items one input may hold: a catalog has hundreds of academies, and every item costs memory in the
# reports of the commands, far beyond its size in the input (a 2 MB list of a million zeros would cost GBs).
MAX_ITEMS = 100_000


class InputError(Exception):
    """The input cannot be read as JSON or JSON lines; the message is one line."""


def read_items(path, envelopes=True):
    """
    The items of the input at ``path`` (``-`` for stdin), as a list.

    JSON lines give one item per line. One document gives, with ``envelopes``, what the normalizer's
    envelope rules extract (``results`` / ``items`` / ``academies`` / ``catalogs``, a list, or one academy),
    without, the list itself or the one object.
    """
    name = "stdin" if path == "-" else path
    values, lines = _read_values(path, name)
    if lines:
        return values
    document = values[0]
    items = extract_items(document) if envelopes else document if isinstance(document, list) else [document]
    if len(items) > MAX_ITEMS:
        raise InputError(_too_many(name))
    return items


def _too_many(name):
    return f"{name} holds more than {MAX_ITEMS:,} items; not applied (split it)"


def _read_values(path, name):
    """(values, is_json_lines): the parsed lines, or a one-value list of the document."""
    limit = conf.max_input_bytes()
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", sys.stdin)
            return _parse(_lines(stream, name, limit), name)
        with open(path, "rb") as stream:
            if os.path.isfile(path) and os.fstat(stream.fileno()).st_size > limit:
                raise InputError(_too_large(name, limit))
            return _parse(_lines(stream, name, limit), name)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from exc


def _too_large(name, limit):
    return f"{name} is larger than {limit:,} bytes (ACADEMY_MAX_INPUT_BYTES); not read"


def _lines(stream, name, limit):
    """The lines of ``stream`` as bytes (with their newline), read in bounded chunks, at most ``limit`` bytes."""
    total, pending = 0, []
    while True:
        chunk = stream.readline(CHUNK_BYTES)
        if isinstance(chunk, str):  # a text stdin without a buffer (tests)
            chunk = chunk.encode("utf-8", "surrogateescape")
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise InputError(_too_large(name, limit))
        pending.append(chunk)
        if chunk.endswith(b"\n"):
            yield b"".join(pending)
            pending = []
    if pending:
        yield b"".join(pending)


def _parse(lines, name):
    """``(values, is_json_lines)``: the first non-blank line alone and each line after it, else one document."""
    head = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    first = b"".join(head)
    try:
        value = _loads(first, name, len(head))
    except InputError:
        value = _NOT_ALONE
    if value is not _NOT_ALONE:
        values, number = [value], len(head)
        for number, line in enumerate(lines, number + 1):
            if line.strip():
                if len(values) >= MAX_ITEMS:
                    raise InputError(_too_many(name))
                values.append(_loads(line, name, number))
        if len(values) > 1:
            return values, True
        return values, False
    return [_loads(first + b"".join(lines), name, None)], False


_NOT_ALONE = object()


def _loads(data, name, line_number):
    """Decode and parse one JSON value; ``line_number`` names the line of JSON lines (None: a document)."""
    where = f"{name} line {line_number}" if line_number else name
    if line_number:
        data = data.rstrip(b"\r\n")
    if data.startswith(b"\xef\xbb\xbf") and line_number in (None, 1):  # a UTF-8 byte order mark
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if line_number else f"line {exc.lineno} column {exc.colno}"
        raise InputError(f"{where} is not valid JSON: {exc.msg} at {at}") from exc
    except RecursionError as exc:
        raise InputError(f"{where} is nested too deeply to read") from exc
    except ValueError as exc:  # e.g. an integer of more digits than int() converts
        raise InputError(f"{where} cannot be read as JSON: {' '.join(str(exc).split())}") from exc
