"""
The fault suite, input side: hostile input to ``reconcile_academies`` (docs/reference/commands.md).

Every run is the real command in a subprocess (``--from-file -`` on stdin or a file in ``tmp_path``, or the
catalog API over HTTP), on the database under test. The rules checked:

- input that cannot be read as JSON (garbage, truncated, invalid UTF-8, empty, 100,000 levels deep, a
  number too long to convert) exits 2 with one readable line on stderr and writes nothing;
- JSON that parses is handled item by item: each item is applied or skipped with a one-line reason, the
  run exits 0 (1 only for rows the database refused, which bad input must never cause), never a traceback;
- a failing run leaves the table exactly as it was (every column of every row), and a mixed run writes
  exactly the good items (a rejected update of an existing academy touches nothing);
- a catalog page that is not a usable list of academies fails the whole fetch: exit 2, nothing written.

Tests:

1. ``test_unreadable_input_exits_2_and_writes_nothing``: a dozen unreadable files, on stdin and as files.
2. ``test_wrong_types_corpus``: every field of an academy replaced by each value of a junk corpus (nulls,
   booleans, numbers, NaN, strings, control characters, lone surrogates, lists, objects, 400-level nesting).
   The expected outcome of each item comes from the rules as this test states them, junk value by junk value
   (``expect``: not from the normalizer under test), plus the apply layer's identity and uniqueness rules, and
   the table must hold exactly the applied items, with exactly the values the rules give them.
3. ``test_ten_thousand_items_with_bad_ones_mixed_in``: exact counts; prints the timing.
4. ``test_multi_megabyte_strings``: 3 MB descriptions, titles, uuids, tag lists...: per-item reasons,
   and a report that does not echo megabytes back.
5. ``test_mixed_run_writes_exactly_the_good_items``: pre-existing rows, good and bad updates of them.
6. ``test_hostile_catalog_pages_exit_2_and_write_nothing``: page 2 of 3 served by
   ``tests.catalog_server.CatalogServer`` as garbage, invalid UTF-8, a truncated body, 100,000 levels of
   nesting, 20 MB of junk, a scalar, an object without a list...
7. ``test_redirects_write_nothing_and_send_nothing_to_the_other_host``: page 2 answering 301-308 to a second
   server (another host), the token endpoint answering 302/307/308 there, a same-host 302: exit 2, one line
   without the secret, the table untouched, the other server never hit (no GET, no POSTed secret).
8. ``test_future_dated_stored_times_are_repaired``: rows left holding future ``source_timestamp`` s (minutes
   past the bound to 9999-12-31): reconcile updates and ``--deactivate-missing`` deactivates them (none
   ``stale``), ``repair_future_timestamps`` resets the rest, and no future time is left.

Randomness comes from ``ACADEMY_FAULT_SEED`` (printed in every failure message).
"""

import concurrent.futures
import json
import os
import random
import re
import time
import unicodedata
import uuid

import pytest
from django.db import connection

from academy_consumer.models import EnterpriseAcademy
from tests.factories import academy, academy_uuid
from tests.fault.history import check_table

SEED = int(os.environ.get("ACADEMY_FAULT_SEED") or random.SystemRandom().randrange(2 ** 32))
MB3 = 3 * 1024 * 1024
COLUMNS = [f.attname for f in EnterpriseAcademy._meta.concrete_fields]
STABLE_COLUMNS = [c for c in COLUMNS if c != "source_timestamp"]
# A line of a report or of an error: no control character, no unpaired surrogate.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def quiet(stderr):
    """Nothing on stderr but ``reconcile:`` progress lines (written for lists of more than 1,000 items)."""
    return all(line.startswith("reconcile: ") for line in stderr.splitlines())


def seeded(message):
    return f"{message} (ACADEMY_FAULT_SEED={SEED})"


def full_item(namespace, index, version=0, **extra):
    """
    A valid catalog item with every field (``tests.factories.academy``, uuid namespace ``hostile/<namespace>``), in
    the shape ``history.check_table`` reads (title, display_order = version).
    """
    return academy(index, f"{namespace.title()} Academy {index} v{version}", namespace=f"hostile/{namespace}",
                   short_description=f"v{version}", long_description=f"<p>{namespace} {index}</p>",
                   image=f"https://example.com/{namespace}/{index}.png",
                   tags=[{"id": 1, "title": "Data", "description": "d"}, "SQL"], display_order=version, **extra)


def expected_of(items, active=True):
    """``history.check_table``'s expected state for valid items (uuid -> newest data)."""
    return {item["uuid"]: {"data": item, "active": active, "time": None} for item in items}


def snapshot(columns=COLUMNS):
    """Every column of every row, in primary key order: what "untouched" is compared with."""
    return list(EnterpriseAcademy.objects.order_by("pk").values_list(*columns))


# ---------------------------------------------------------------------------------------------------
# Running the command
# ---------------------------------------------------------------------------------------------------

class Run:
    """One finished ``reconcile_academies`` run: exit status, output and duration."""

    def __init__(self, returncode, stdout, stderr, seconds):
        self.returncode, self.stdout, self.stderr, self.seconds = returncode, stdout, stderr, seconds

    @property
    def report(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"<exit {self.returncode}, stderr {self.stderr[-2000:]!r}, stdout {self.stdout[:500]!r}>"


@pytest.fixture
def reconcile(cli):
    """
    ``reconcile(*args, stdin=None, env=None)`` runs ``academy-consumer reconcile_academies ARGS`` with the
    ``cli`` fixture; ``stdin`` may be bytes (hostile input is not text), and ``Run.seconds`` times the run.
    """
    def run(*args, stdin=None, env=None, timeout=300):
        started = time.monotonic()
        done = cli("reconcile_academies", *args, input=stdin, env=env, timeout=timeout)
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    return run


def write(tmp_path, name, data):
    """Write ``data`` (bytes or text) to ``tmp_path / name``; returns its path as text."""
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


def assert_one_line_failure(done, what):
    """Exit 2, one readable line on stderr, nothing on stdout, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, seeded(f"{what}: {done!r}")
    assert len(lines) == 1 and "Traceback" not in done.stderr, seeded(f"{what}: stderr is not one line: {done!r}")
    assert len(lines[0]) < 1000 and not UNPRINTABLE.search(lines[0]), seeded(f"{what}: unreadable: {lines[0][:300]!r}")
    assert done.stdout == "", seeded(f"{what}: wrote a report: {done!r}")
    return lines[0]


def assert_items_handled(report, what):
    """Each entry of a --json report is one outcome; skipped ones carry a printable one-line reason."""
    for entry in report["items"]:
        assert entry["outcome"] in ("created", "updated", "unchanged", "skipped", "stale", "deactivated"), \
            seeded(f"{what}: {entry!r}")
        if entry["outcome"] == "skipped":
            reason = entry.get("reason", "")
            assert reason and len(reason) < 500 and not UNPRINTABLE.search(reason), seeded(f"{what}: {entry!r}")
        for key in ("name", "uuid"):
            value = entry.get(key) or ""
            assert len(value) <= 300 and not UNPRINTABLE.search(value), \
                seeded(f"{what}: reported {key} is not one short line: {value[:100]!r}... ({len(value)} chars)")


def deep(levels, opening="[", closing="]", inner=""):
    return opening * levels + inner + closing * levels


# ---------------------------------------------------------------------------------------------------
# 1. Unreadable input
# ---------------------------------------------------------------------------------------------------

def unreadable_inputs(rng):
    """(label, bytes, expected words in the error) of input that cannot be read as JSON."""
    good = json.dumps({"results": [full_item("unreadable", n) for n in range(3)]})
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    return [
        ("empty input", b"", "not valid JSON"),
        ("binary garbage", garbage, ""),
        ("truncated JSON (in a string)", good[: good.index("Academy 2") + 3].encode(), "not valid JSON"),
        ("JSON then trailing junk", (good + "}{").encode(), "not valid JSON"),
        ("invalid UTF-8 at the start", b"\xff\xfe" + good.encode(), "UTF-8"),
        ("invalid UTF-8 in one item's title", good.replace("Academy 1", "Academy \xff 1").encode("latin-1"), "UTF-8"),
        ("UTF-16 with a BOM", good.encode("utf-16"), ""),
        ("a number too long to convert", ('[{"title": "Big", "display_order": ' + "9" * 5000 + "}]").encode(), ""),
        ("100,000 nested lists", deep(100_000).encode(), "nested too deeply"),
        ("100,000 levels in an item's catalogs",
         ('[{"title": "Deep", "catalogs": ' + deep(100_000) + "}]").encode(), "nested too deeply"),
        ("100,000 levels of rich text",
         ('{"results": [{"title": ' + deep(100_000, '{"rendered":', "}", '"x"') + "}]}").encode(), "nested too deeply"),
    ]


def test_unreadable_input_exits_2_and_writes_nothing(reconcile, tmp_path, guarantee):
    rng = random.Random(SEED)
    existing = [full_item("existing", n) for n in range(5)]
    first = reconcile("--from-file", "-", "--json", stdin=json.dumps(existing))
    assert first.returncode == 0 and first.report["created"] == 5, seeded(repr(first))
    before = snapshot()

    runs = []  # (label, words, args, stdin)
    for n, (label, data, words) in enumerate(unreadable_inputs(rng)):
        runs.append((f"{label} on stdin", words, ("--from-file", "-", "--json", "--deactivate-missing"), data))
        if "UTF" in label:  # a file is read as stdin is; the decoding is what could differ
            path = write(tmp_path, f"input-{n}.json", data)
            runs.append((f"{label} in a file", words, ("--from-file", path), b""))
    # Each run must write nothing, so they may run side by side (the table is compared after all of them).
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda run: reconcile(*run[2], stdin=run[3]), runs))
    for (label, words, _, _), done in zip(runs, results):
        line = assert_one_line_failure(done, label)
        assert words.lower() in line.lower(), seeded(f"{label}: {line!r} lacks {words!r}")
    assert snapshot() == before, seeded("a run of unreadable input changed the table")

    check = check_table(expected_of(existing))
    guarantee("hostile reconcile input: unreadable files", events=len(runs), bad_inputs=len(runs),
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 2. Wrong types everywhere
# ---------------------------------------------------------------------------------------------------

DEEP = 400  # parses (the limit is Python's recursion limit, ~1,000), deeper than any search goes


def nested(levels, key=None, inner=None):
    value = inner
    for _ in range(levels):
        value = [value] if key is None else {key: value}
    return value


QUERY = "3e5a6f2c-8d1b-4c4e-9f7a-2b6c0d9e1f10"
JUNK = {
    "null": None, "true": True, "false": False, "0": 0, "1": 1, "-1": -1, "1.5": 1.5, "2.0": 2.0,
    "2**31": 2 ** 31, "2**64": 2 ** 64, "1e300": 1e300, "Infinity": float("inf"), "NaN": float("nan"),
    '""': "", '"   "': "   ", '"x"': "x", '"-1"': "-1", '"1.5"': "1.5", '"true"': "true",
    "NUL": "x\x00y", "ANSI escape": "\x1b[2J", "newline": "a\nb", "lone surrogate": "\ud800 x", "emoji": "🎓 é",
    "[]": [], "{}": {}, "[junk]": [None, 1, "x", [], {}, True], "{junk}": {"a": [1, {"b": None}]},
    "rich junk": {"rendered": {"raw": ["x"]}, "raw": 7}, "rich text": {"rendered": " Rich  Text "},
    "uuid as int": uuid.UUID(QUERY).int % 2 ** 63, "uuid in a list": [QUERY], "uuid object": {"uuid": QUERY},
    "deep list": nested(DEEP), "deep uuid objects": nested(DEEP, "uuid", QUERY),
    "deep rendered": nested(DEEP, "rendered", "Deep"), "deep catalog_query": [nested(DEEP, "catalog_query", QUERY)],
    "shallow catalog_query": [nested(3, "catalog_query", QUERY)],
}
# field -> keys removed first, so the junk is what the normalizer reads (not an earlier alias); "title
# (no uuid)" is a title of an item without a uuid: the report names such an item by its (junk) name.
FIELDS = {
    "uuid": (), "academy_uuid": ("uuid",), "title": (), "title (no uuid)": ("uuid",), "name": (),
    "short_name": ("title",), "slug": (), "stripe_price_lookup_key": (), "product_key": (), "stripe_product_id": (),
    "display_order": (), "is_active": (), "catalog_query_uuid": (), "catalog_query": (),
    "enterprise_catalog_query": (), "catalogs": (), "enterprise_catalogs": (), "short_description": (),
    "description": ("short_description",), "long_description": (), "image": (), "thumbnail_url": ("image",),
    "tags": (),
}


def corpus():
    """(label, item): one item per (field, junk value), plus valid controls, plus non-objects."""
    items = []
    for n, (field, removed) in enumerate(FIELDS.items()):
        for m, (label, value) in enumerate(JUNK.items()):
            item = full_item("corpus", n * 100 + m)
            item["title"] = f"Corpus {n * 100 + m} {field} {label}"  # unique name and lookup key: only junk collides
            for key in removed:
                item.pop(key, None)
            item[field.split()[0]] = value
            items.append((f"{field} = {label}", item))
    items += [(f"control {n}", full_item("control", n)) for n in range(10)]
    items += [(f"item = {label}", value) for label, value in JUNK.items() if not isinstance(value, dict)]
    return items


MODEL_DEFAULTS = {"catalog_query_uuid": None, "stripe_product_id": "", "display_order": 0, "is_active": True,
                  "description": "", "long_description": "", "thumbnail_url": "", "tags": []}


# ---------------------------------------------------------------------------------------------------
# What the normalization rules make of each junk value: stated here from the rules (docs/reference/rules.md),
# label by label, not asked of academy_consumer.normalize (the code under test)
# ---------------------------------------------------------------------------------------------------

NOT_TEXT = "not text"  # what the text rule refuses: lists, objects without rendered/raw (an image: url/src)
TEXT_OF = {  # junk label -> the text rule's reading: a string stripped, a number (a boolean too) as it prints
    "null": None, "true": "True", "false": "False", "0": "0", "1": "1", "-1": "-1", "1.5": "1.5", "2.0": "2.0",
    "2**31": "2147483648", "2**64": "18446744073709551616", "1e300": "1e+300", "Infinity": "inf", "NaN": "nan",
    '""': "", '"   "': "", '"x"': "x", '"-1"': "-1", '"1.5"': "1.5", '"true"': "true", "NUL": "x\x00y",
    "ANSI escape": "\x1b[2J", "newline": "a\nb", "lone surrogate": "\ud800 x", "emoji": "🎓 é",
    "rich junk": "7", "rich text": "Rich  Text", "uuid as int": str(uuid.UUID(QUERY).int % 2 ** 63),
}
RICH = {"rich junk", "rich text"}  # rich text objects: text for a name or a description, not for an image
IN_NO_LINE = {"NUL", "ANSI escape", "lone surrogate", "newline"}  # a control character (or surrogate) in one line
IN_NO_TEXT = {"NUL", "ANSI escape", "lone surrogate"}  # ... in a text (tab, newline, carriage return allowed)
QUERY_FOUND = {"uuid in a list", "uuid object", "shallow catalog_query"}  # the query uuid within 20 levels
SLUGS = {'"x"': "x", '"-1"': "-1", '"true"': "true"}  # the valid slugs among the junk
ORDERS = {"0": 0, "1": 1, "2.0": 2}  # the usable display orders
NEGATIVE, TOO_LARGE = {"-1", '"-1"'}, {"2**31", "2**64", "1e300", "uuid as int"}
ACTIVE = {"null": True, "true": True, "false": False, '"true"': True}
TAGS = {"[]": [], "[junk]": ["x"], "uuid in a list": [QUERY], "deep list": [], "deep catalog_query": [],
        "shallow catalog_query": []}  # the lists: titles of their strings and {"title"} objects
TEXT_FIELD = {"short_description": "description", "description": "description",
              "long_description": "long_description", "image": "thumbnail_url", "thumbnail_url": "thumbnail_url"}
QUERY_FIELDS = ("catalog_query_uuid", "catalog_query", "enterprise_catalog_query", "catalogs", "enterprise_catalogs")


class Skip(Exception):
    """The item is skipped: ``words`` are in its reason."""

    def __init__(self, words):
        super().__init__(words)
        self.words = words


def name_key(name):
    """The uniqueness rule of names: two names that differ only in case are one academy's (the rule, not the model's
    ``name_key``)."""
    return name.casefold()


def _token(text):
    """A lookup token of the ASCII-foldable names of this corpus: lowercase, other runs to ``_``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub("[^a-z0-9]+", "_", folded).strip("_")


def _name(field, label, item):
    """The name rule: the first non-empty text of name/title/short_name, whitespace runs collapsed."""
    if field in ("title", "title (no uuid)", "name", "short_name"):
        text = TEXT_OF.get(label, NOT_TEXT)
        if text not in (None, NOT_TEXT) and text.strip():
            if label in IN_NO_TEXT:
                raise Skip("contains a control character")
            return " ".join(text.split())
        if field != "name":
            raise Skip("missing name")
    return " ".join(item["title"].split())


def _line(field, label, what):
    """A string field of one line (lookup key, product key, product id): the junk string, or ``Skip``."""
    if label in IN_NO_LINE:
        raise Skip(f"{what} ")  # "<field> '...' contains a control character"
    return TEXT_OF[label]


def expect(label, item):
    """The normalized academy the rules make of one corpus item, as ``(uuid, name, fields, defaults)``; ``Skip``."""
    field, _, junk = label.partition(" = ")
    if field == "item":
        raise Skip("not a JSON object")
    if field.startswith("control"):
        field = junk = None
    name = _name(field, junk, item)
    if field in ("uuid", "academy_uuid") and junk != "null":
        raise Skip("invalid uuid")
    academy_uuid = None if field in ("uuid", "academy_uuid", "title (no uuid)") else uuid.UUID(item["uuid"])
    fields = {"name": name, "is_active": True, "display_order": 0, "description": "v0",
              "long_description": item.get("long_description"), "thumbnail_url": item.get("image"),
              "tags": ["Data", "SQL"]}
    defaults = {"slug": re.sub("[^a-z0-9]+", "-", _token(name)).strip("-"), "stripe_product_id": ""}
    lookup_source = name
    if academy_uuid is not None:
        fields["uuid"] = academy_uuid
    if field == "is_active":
        if junk not in ACTIVE:
            raise Skip("is_active must be true or false")
        fields["is_active"] = ACTIVE[junk]
    if field in QUERY_FIELDS and junk in QUERY_FOUND:
        fields["catalog_query_uuid"] = uuid.UUID(QUERY)
    if field == "slug" and junk not in ("null", '""', '"   "'):  # carried: valid, or the default in its place
        default = defaults.pop("slug")
        fields["slug"] = SLUGS.get(junk, default)
    if field == "stripe_price_lookup_key" and junk != "null":
        if junk not in STRING_LABELS or not TEXT_OF[junk]:
            raise Skip("stripe_price_lookup_key must be a non-empty string")
        fields["stripe_price_lookup_key"] = _line(field, junk, "stripe_price_lookup_key")
    if field == "product_key" and junk in STRING_LABELS:
        text = _line(field, junk, "product_key")
        lookup_source = text if text.strip() else name
    if "stripe_price_lookup_key" not in fields:
        token = _token(lookup_source).removesuffix("_academy")
        defaults["stripe_price_lookup_key"] = f"essentials_{token}_academy_yearly"
    if field == "stripe_product_id" and junk != "null":
        if junk not in STRING_LABELS:
            raise Skip("stripe_product_id must be a string")
        fields["stripe_product_id"] = _line(field, junk, "stripe_product_id")
        defaults.pop("stripe_product_id")
    if field == "display_order":
        _display_order(junk, fields)
    if field in TEXT_FIELD:
        _text(field, junk, fields)
    if field == "tags":
        if junk not in TAGS and junk != "null":
            raise Skip("tags must be a list")
        if junk == "null":
            del fields["tags"]
        else:
            fields["tags"] = TAGS[junk]
    return academy_uuid, name, fields, defaults


STRING_LABELS = {label for label, value in JUNK.items() if isinstance(value, str)}


def _display_order(junk, fields):
    """The display order rule: a whole number 0..2**31-1 (an int, a whole float, an integer-looking string)."""
    if junk == "null":
        del fields["display_order"]
    elif junk in NEGATIVE:
        raise Skip("display_order must not be negative")
    elif junk in TOO_LARGE:
        raise Skip("display_order is too large")
    elif junk not in ORDERS:
        raise Skip("display_order must be a whole number")
    else:
        fields["display_order"] = ORDERS[junk]


def _text(field, junk, fields):
    """The text rules of the descriptions and the image (stripped, may be empty; ``None``: not carried)."""
    target = TEXT_FIELD[field]
    text = TEXT_OF.get(junk, NOT_TEXT)
    if field == "image" and junk in RICH:
        text = NOT_TEXT
    if text is NOT_TEXT:
        raise Skip(f"{field} is not text")
    if junk in IN_NO_TEXT:
        raise Skip(f"{target} contains a control character")
    if text is None:
        del fields[target]
    else:
        fields[target] = text


class Oracle:
    """
    What the normalization and apply rules make of each item, in order: the rules' verdict on its fields (``expect``,
    written here from the rules), then identity and uniqueness (name and lookup key held by another academy skip
    the item). Independent of the database and of the code under test.
    """

    def __init__(self):
        self.rows = []  # dicts of the expected values of each row (normalized fields + defaults)
        self.touched = {}  # id(row) -> outcomes of this pass ("created", "updated", "unchanged")

    def run(self, labelled):
        """The expected (outcome, words of the reason) of each ``(label, item)`` of one sync of the items."""
        self.touched = {}
        return [self.apply(label, item) for label, item in labelled]

    def rows_only_unchanged(self):
        """The rows that no item of the last pass created or updated."""
        return [row for row in self.rows if set(self.touched.get(id(row), ["unchanged"])) == {"unchanged"}]

    def _holder(self, field, value, row):
        return next((r for r in self.rows if r is not row and r[field] == value), None)

    def apply(self, label, item):
        """Apply one catalog item to the oracle's rows by the rules; returns ``(outcome, words of the reason)``."""
        try:
            academy_uuid_, name, fields, defaults = expect(label, item)
        except Skip as skip:
            return "skipped", skip.words
        row = next((r for r in self.rows if academy_uuid_ and r["uuid"] == academy_uuid_), None)
        matched_by = "uuid" if row else None
        if row is None:
            row = next((r for r in self.rows if r["name_key"] == name_key(name)), None)
            if row is not None and academy_uuid_ and row["uuid"] and row["uuid"] != academy_uuid_:
                return "skipped", "already used"
            matched_by = "name" if row else None
        values = dict(fields) if row else {**defaults, **fields}
        if matched_by == "name":
            values.pop("name")
        if "name" in values and self._holder("name_key", name_key(values["name"]), row):
            return "skipped", "already used"
        key = values.get("stripe_price_lookup_key")
        if key is not None and self._holder("stripe_price_lookup_key", key, row):
            return "skipped", "already used"
        if row is None:
            self.rows.append({**MODEL_DEFAULTS, **values, "name_key": name_key(values["name"]), "uuid": academy_uuid_})
            self.touched[id(self.rows[-1])] = ["created"]
            return "created", ""
        # (a slug may have been suffixed on create: the apply layer compares it with its own suffix again)
        outcome = "updated" if any(row[k] != v for k, v in values.items() if k != "slug") else "unchanged"
        row.update(values)
        if "name" in values:
            row["name_key"] = name_key(values["name"])
        self.touched.setdefault(id(row), []).append(outcome)
        return outcome, ""


def find_row(rows, want):
    return [r for r in rows if (r.uuid == want["uuid"] if want["uuid"] else r.name_key == want["name_key"])]


def compare_with_oracle(labelled, expected, report):
    """Per-item mismatches between the oracle's (outcome, reason) and a --json report."""
    mismatches = []
    for (label, _), (want, reason), entry in zip(labelled, expected, report["items"]):
        got = entry["outcome"]
        if got != want or (want == "skipped" and reason not in entry.get("reason", "")):
            mismatches.append(f"{label}: expected {want} ({reason}), got {got} ({entry.get('reason')})")
    return mismatches


def compare_table_with_oracle(oracle):
    """(lost, duplicates, problems): the table must hold exactly the oracle's rows, with their values."""
    rows = list(EnterpriseAcademy.objects.all())
    problems, lost = [], 0
    for want in oracle.rows:
        match = find_row(rows, want)
        if len(match) != 1:
            lost += 1
            problems.append(f"{want['name']!r}: {len(match)} rows")
            continue
        for field, value in want.items():
            stored = getattr(match[0], field)
            if field == "slug":
                if not (stored == value or stored.startswith(value[:240] + "-")):
                    problems.append(f"{want['name']!r}: slug {stored!r}, expected {value!r}")
            elif stored != value:
                problems.append(f"{want['name']!r}: {field} {stored!r}, expected {value!r}")
    return lost, max(0, len(rows) - len(oracle.rows)), problems


def test_wrong_types_corpus(reconcile, tmp_path, guarantee):
    labelled = corpus()
    items = [item for _, item in labelled]
    path = write(tmp_path, "corpus.json", json.dumps({"results": items}))  # NaN/Infinity as Python writes them
    oracle = Oracle()
    expected = oracle.run(labelled)
    bad = sum(outcome == "skipped" for outcome, _ in expected)
    assert 100 < bad < len(items) - 100, seeded(f"a corpus that tests little: {bad} of {len(items)} rejected")

    # The human summary (dry run): one printable line per skipped item, whatever the item holds.
    dry = reconcile("--from-file", path, "--dry-run")
    assert dry.returncode == 0 and quiet(dry.stderr), seeded(repr(dry))
    lines = dry.stdout.splitlines()
    assert len(lines) == 1 + bad, seeded(dry.stdout[:3000])
    assert not any(UNPRINTABLE.search(line) or len(line) > 1000 for line in lines), seeded(dry.stdout[:3000])
    assert EnterpriseAcademy.objects.count() == 0, seeded("the dry run wrote rows")

    done = reconcile("--from-file", path, "--json")
    assert done.returncode == 0 and quiet(done.stderr), seeded(repr(done))
    assert_items_handled(done.report, "corpus")
    assert len(done.report["items"]) == len(items) and done.report["errors"] == 0, seeded(repr(done))
    mismatches = compare_with_oracle(labelled, expected, done.report)
    assert not mismatches, seeded("\n".join(mismatches[:20]))
    lost, duplicates, problems = compare_table_with_oracle(oracle)
    assert not problems and not duplicates, seeded("\n".join(problems[:20]) + f"\n{duplicates} extra rows")

    # The same file again: outcomes as the oracle says (unchanged, except rows two items share, e.g. an
    # item without uuid matched by name), and rows no item changes are not written (`modified` stays).
    before = snapshot(STABLE_COLUMNS)
    expected = oracle.run(labelled)
    again = reconcile("--from-file", path, "--json")
    assert again.returncode == 0 and quiet(again.stderr), seeded(repr(again))
    assert again.report["created"] == 0 and again.report["errors"] == 0, seeded(repr(again))
    mismatches = compare_with_oracle(labelled, expected, again.report)
    assert not mismatches, seeded("\n".join(mismatches[:20]))
    rows = list(EnterpriseAcademy.objects.all())
    stable_pks = {row.pk for want in oracle.rows_only_unchanged() for row in find_row(rows, want)}
    pk = STABLE_COLUMNS.index("id")
    after = snapshot(STABLE_COLUMNS)
    assert [r for r in after if r[pk] in stable_pks] == [r for r in before if r[pk] in stable_pks], \
        seeded("an unchanged row was written")
    assert len(stable_pks) > 300, seeded(f"only {len(stable_pks)} rows left alone")
    lost2, duplicates2, problems = compare_table_with_oracle(oracle)
    assert not problems, seeded("\n".join(problems[:20]))

    guarantee("hostile reconcile input: wrong types everywhere", events=2 * len(items), bad_inputs=2 * bad,
              lost=lost + lost2, duplicates=max(duplicates, duplicates2), stale=0)
    assert lost + lost2 == 0 and duplicates + duplicates2 == 0


# ---------------------------------------------------------------------------------------------------
# 3. Ten thousand items
# ---------------------------------------------------------------------------------------------------

BAD_KINDS = [  # (label, make the bad item from a valid one, words of the reason)
    ("missing name", lambda item: {k: v for k, v in item.items() if k != "title"}, "missing name"),
    ("invalid uuid", lambda item: {**item, "uuid": "not-a-uuid"}, "invalid uuid"),
    ("negative display_order", lambda item: {**item, "display_order": -3}, "negative"),
    ("fractional display_order", lambda item: {**item, "display_order": 1.5}, "whole number"),
    ("textual display_order", lambda item: {**item, "display_order": "first"}, "whole number"),
    ("invalid is_active", lambda item: {**item, "is_active": "maybe"}, "is_active"),
    ("control character in the name", lambda item: {**item, "title": item["title"] + "\x07"}, "control character"),
    ("tags not a list", lambda item: {**item, "tags": "Data, SQL"}, "tags must be a list"),
    ("over-long lookup key", lambda item: {**item, "stripe_price_lookup_key": "k" * 300}, "too long"),
    ("not an object", lambda item: item["title"], "not a JSON object"),
    ("a list, not an object", lambda item: [item], "not a JSON object"),
]


def test_ten_thousand_items_with_bad_ones_mixed_in(reconcile, tmp_path, guarantee, capsys):
    rng = random.Random(SEED)
    items, wanted, goods = [], [], []
    for n in range(10_000):
        roll = rng.random()
        if roll < 0.05:
            label, make, words = BAD_KINDS[n % len(BAD_KINDS)]
            items.append(make(full_item("bulkbad", n, version=rng.randrange(50))))
            wanted.append(("skipped", words, label))
        elif roll < 0.06 and goods:
            items.append(dict(rng.choice(goods)))  # the same academy listed twice: the second is unchanged
            wanted.append(("unchanged", "", "repeat"))
        else:
            goods.append(full_item("bulk", n, version=rng.randrange(50)))
            items.append(goods[-1])
            wanted.append(("created", "", "good"))
    bad = sum(outcome == "skipped" for outcome, _, _ in wanted)
    path = write(tmp_path, "bulk.json", json.dumps({"count": len(items), "results": items}))

    done = reconcile("--from-file", path, "--json", timeout=600)
    with capsys.disabled():
        print(f"\n[hostile reconcile] 10,000 items ({bad} bad) on {connection.vendor}: "
              f"{done.seconds:.1f} s, {len(items) / done.seconds:.0f} items/s (seed {SEED})")
    assert done.returncode == 0 and quiet(done.stderr), seeded(repr(done))
    report = done.report
    assert_items_handled(report, "10,000 items")
    counts = {key: report[key] for key in ("created", "updated", "unchanged", "skipped", "stale", "errors")}
    assert counts == {"created": len(goods), "updated": 0, "unchanged": len(items) - len(goods) - bad,
                      "skipped": bad, "stale": 0, "errors": 0}, seeded(f"{counts}")
    wrong = [f"item {n} ({label}): expected {outcome} ({words}), got {entry}"
             for n, ((outcome, words, label), entry) in enumerate(zip(wanted, report["items"]))
             if entry["outcome"] != outcome or words not in entry.get("reason", "")]
    assert not wrong, seeded("\n".join(wrong[:20]))

    check = check_table(expected_of(goods))
    guarantee("hostile reconcile input: 10,000 items, 5% bad", events=len(items), bad_inputs=bad,
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 4. Multi-megabyte strings
# ---------------------------------------------------------------------------------------------------

def test_multi_megabyte_strings(reconcile, tmp_path, guarantee):
    big = "d" * MB3
    rejected = [  # (label, fields, words of the reason)
        ("3 MB description", {"short_description": big}, "description is too long"),
        ("3 MB long_description", {"long_description": big}, "long_description is too long"),
        ("3 MB title", {"title": "T" * MB3}, "name is too long"),
        ("3 MB rich-text title", {"title": {"rendered": "R" * MB3}}, "name is too long"),
        ("3 MB uuid string", {"uuid": "0" * MB3}, "invalid uuid"),
        ("3 MB tags list", {"tags": [f"tag {n}" for n in range(MB3 // 12)]}, "tags has more than"),
        ("3 MB tag title", {"tags": ["t" * MB3]}, "tag title is too long"),
        ("3 MB image URL", {"image": "https://example.com/" + big}, "thumbnail_url is too long"),
        ("3 MB lookup key", {"stripe_price_lookup_key": "k" * MB3}, "stripe_price_lookup_key is too long"),
        ("3 MB product key", {"product_key": "p" * MB3}, "product_key is too long"),
        ("3 MB product id", {"stripe_product_id": "p" * MB3}, "stripe_product_id is too long"),
        ("3 MB of tag objects", {"tags": [{"title": f"t{n}", "description": "x" * 20} for n in range(MB3 // 48)]},
         "tags has more than"),
    ]
    applied = [  # (label, fields, the name the row gets)
        ("3 MB of whitespace around the name", {"title": " \n\t" * (MB3 // 3) + "Spacey  Academy "}, "Spacey Academy"),
        ("3 MB slug (invalid: the default replaces it)", {"slug": "s" * MB3}, None),
        ("3 MB in an unknown field", {"notes": big}, None),
        ("3 MB catalog_query_uuid (ignored)", {"catalog_query_uuid": "0" * MB3}, None),
        ("3 MB of one repeated tag", {"tags": ["Data"] * (MB3 // 8)}, None),
    ]
    items, wanted, expected = [], [], {}
    for n, (label, fields, words) in enumerate(rejected):
        items.append({**full_item("bigbad", n), **fields})
        wanted.append(("skipped", words, label))
    for n, (label, fields, name) in enumerate(applied):
        item = {**full_item("big", n), **fields}
        items.append(item)
        wanted.append(("created", "", label))
        expected[item["uuid"]] = {"data": {**item, "title": name or item["title"]}, "active": True}
    items.insert(len(items) // 2, full_item("big", 99))  # a small good item among them
    wanted.insert(len(wanted) // 2, ("created", "", "small"))
    expected[academy_uuid(99, "hostile/big")] = {"data": full_item("big", 99), "active": True}
    path = write(tmp_path, "big.json", json.dumps({"results": items}))

    done = reconcile("--from-file", path, "--json")
    assert done.returncode == 0 and quiet(done.stderr), seeded(repr(done))
    assert len(done.stdout) < 50_000, seeded(f"the report echoes megabytes back: {len(done.stdout):,} characters")
    report = done.report
    assert_items_handled(report, "multi-megabyte strings")
    wrong = [f"{label}: expected {outcome} ({words}), got {entry}"
             for (outcome, words, label), entry in zip(wanted, report["items"])
             if entry["outcome"] != outcome or words not in entry.get("reason", "")]
    assert not wrong, seeded("\n".join(wrong))
    assert EnterpriseAcademy.objects.get(uuid=academy_uuid(1, "hostile/big")).slug == "big-academy-1-v0"
    assert EnterpriseAcademy.objects.get(uuid=academy_uuid(4, "hostile/big")).tags == ["Data"]

    # The human summary of the same file: short lines, same outcomes (now unchanged), exit 0.
    again = reconcile("--from-file", path)
    assert again.returncode == 0 and quiet(again.stderr), seeded(repr(again))
    assert f"unchanged {len(expected)}, skipped {len(rejected)}" in again.stdout, seeded(again.stdout[:2000])
    assert max(len(line) for line in again.stdout.splitlines()) < 1000, seeded("a summary line is megabytes long")

    check = check_table(expected)
    guarantee("hostile reconcile input: multi-megabyte strings", events=len(items), bad_inputs=len(rejected),
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 5. Nothing half-written: a mixed run over existing rows
# ---------------------------------------------------------------------------------------------------

def test_mixed_run_writes_exactly_the_good_items(reconcile, guarantee):
    existing = [full_item("mixed", n) for n in range(20)]
    first = reconcile("--from-file", "-", "--json", stdin=json.dumps(existing))
    assert first.returncode == 0 and first.report["created"] == 20, seeded(repr(first))
    rows = {str(row.uuid): row for row in EnterpriseAcademy.objects.all()}
    key_of_15 = rows[existing[15]["uuid"]].stripe_price_lookup_key

    good_updates = [full_item("mixed", n, version=1) for n in range(5)]
    bad_updates = [  # each changes valid fields too: none of it may be written
        ({**full_item("mixed", 5, version=1), "display_order": -1}, "negative"),
        ({**full_item("mixed", 6, version=1), "tags": ["ok", "bad\x00tag"]}, "control character"),
        ({**full_item("mixed", 7, version=1), "is_active": "maybe"}, "is_active"),
        ({**full_item("mixed", 8, version=1), "stripe_price_lookup_key": key_of_15}, "already used"),
        ({**full_item("mixed", 9, version=1), "title": existing[12]["title"].upper()}, "already used"),
    ]
    unchanged = existing[10:15]
    new_good = [full_item("mixednew", n) for n in range(5)]
    new_bad = [
        ({k: v for k, v in full_item("mixednew", 5).items() if k != "title"}, "missing name"),
        ({**full_item("mixednew", 6), "uuid": "xyz"}, "invalid uuid"),
        ({**full_item("mixednew", 7), "display_order": "ten"}, "whole number"),
        ({**full_item("mixednew", 8), "image": ["x.png"]}, "not text"),
        ({**full_item("mixednew", 9), "title": "Lone \ud800 surrogate"}, "surrogate"),
    ]
    junk = [(42, "not a JSON object"), ("x", "not a JSON object"), (None, "not a JSON object"),
            ([], "not a JSON object")]
    entries = ([(item, "updated", "") for item in good_updates] + [(item, "skipped", w) for item, w in bad_updates]
               + [(item, "unchanged", "") for item in unchanged] + [(item, "created", "") for item in new_good]
               + [(item, "skipped", w) for item, w in new_bad] + [(item, "skipped", w) for item, w in junk])
    random.Random(SEED).shuffle(entries)
    untouched = [row for row in snapshot() if str(row[COLUMNS.index("uuid")]) in
                 {item["uuid"] for item, _ in bad_updates}]
    stable = [row for row in snapshot(STABLE_COLUMNS) if str(row[STABLE_COLUMNS.index("uuid")]) in
              {item["uuid"] for item in unchanged}]

    done = reconcile("--from-file", "-", "--json", "--deactivate-missing",
                     stdin=json.dumps([item for item, _, _ in entries]))
    assert done.returncode == 0 and quiet(done.stderr), seeded(repr(done))
    report = done.report
    assert_items_handled(report, "mixed run")
    wrong = [f"{item!r:.80}: expected {outcome} ({words}), got {entry}"
             for (item, outcome, words), entry in zip(entries, report["items"])
             if entry["outcome"] != outcome or words not in entry.get("reason", "")]
    assert not wrong, seeded("\n".join(wrong))
    counts = {key: report[key] for key in ("created", "updated", "unchanged", "skipped", "deactivated", "errors")}
    assert counts == {"created": 5, "updated": 5, "unchanged": 5, "skipped": 14, "deactivated": 5, "errors": 0}, \
        seeded(f"{counts}")
    # Rejected updates of existing academies wrote nothing at all (not even the valid part, not the time);
    # academies listed unchanged kept every column but the recorded snapshot time.
    assert [row for row in snapshot() if row in untouched] == untouched, seeded("a rejected update was half-written")
    assert [row for row in snapshot(STABLE_COLUMNS) if row in stable] == stable, seeded("an unchanged row was written")

    expected = expected_of(good_updates + new_good)
    expected.update(expected_of(existing[5:15]))
    expected.update(expected_of(existing[15:], active=False))  # not listed: --deactivate-missing
    check = check_table(expected)
    guarantee("hostile reconcile input: mixed good and bad over existing rows", events=len(entries),
              bad_inputs=len(bad_updates) + len(new_bad) + len(junk),
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 6. Hostile catalog pages over HTTP
# ---------------------------------------------------------------------------------------------------

CUSTOMER = "11111111-2222-3333-4444-555555555555"


def hostile_pages(rng, server, served):
    """(label, body bytes, declared Content-Length or None) for page 2 of the catalog's 3 pages."""
    base = f"{server.url}/api/v1/academies/?enterprise_customer={CUSTOMER}"
    page = {"count": len(served), "next": f"{base}&page=3", "previous": f"{base}&page=1", "results": served[10:20]}
    text = json.dumps(page, ensure_ascii=False)
    return [
        ("binary garbage", bytes(rng.randrange(256) for _ in range(8192)), None),
        ("invalid UTF-8 in a title", text.replace("Academy 12", "Academy \xff 12").encode("latin-1"), None),
        ("a truncated body", text.encode()[: len(text) // 2], len(text)),
        ("100,000 levels inside results",
         ('{"count": 25, "next": null, "results": [{"title": "Deep", "catalogs": ' + deep(100_000) + "}]}").encode(),
         None),
        ("20 MB of junk", b'{"count": 25, "results": [' + b" " * (20 * 1024 * 1024) + b"?", None),
        ("a JSON number", b"42", None),
        ("an object without a list", json.dumps({"detail": "Request was throttled."}).encode(), None),
        ("results that are not a list", json.dumps({**page, "next": None, "results": "oops"}).encode(), None),
        ("a number too long to convert",
         ('{"count": ' + "9" * 5000 + ', "next": null, "results": []}').encode(), None),
    ]


def test_hostile_catalog_pages_exit_2_and_write_nothing(reconcile, catalog_server, catalog_env, guarantee):
    env = catalog_env
    args = ("--enterprise-customer", CUSTOMER, "--json")
    served = []
    for n in range(25):
        item = full_item("served", n)
        served.append(catalog_server.add_academy(item.pop("title"), enterprise_customer=CUSTOMER, **item))
    legacy = EnterpriseAcademy.objects.create(name="Legacy Academy", slug="legacy", stripe_price_lookup_key="legacy")
    first = reconcile(*args, env=env)
    assert first.returncode == 0 and first.report["created"] == 25, seeded(repr(first))
    # The catalog changes page 1: a run that wrote what it read before failing would show it.
    for n in range(10):
        served[n].update(title=f"Served Academy {n} v1", display_order=1, short_description="v1")
    before = snapshot()

    cases = hostile_pages(random.Random(SEED), catalog_server, served)
    for label, body, declared in cases:
        catalog_server.raw_body_on_page(2, body, declared_length=declared)
        done = reconcile(*args, "--deactivate-missing", env=env)
        line = assert_one_line_failure(done, f"page 2 is {label}")
        assert "nothing was written" in line and "page 2" in line, seeded(f"page 2 is {label}: {line!r}")
        assert snapshot() == before, seeded(f"page 2 is {label}: the table changed")
    assert catalog_server.pages_fetched.count(3) == 1, seeded(f"pages {catalog_server.pages_fetched}")

    catalog_server.raw_body_on_page(2, None)  # the catalog is well again
    done = reconcile(*args, "--deactivate-missing", env=env)
    assert done.returncode == 0, seeded(repr(done))
    assert (done.report["updated"], done.report["unchanged"], done.report["deactivated"]) == (10, 15, 1), \
        seeded(repr(done))
    legacy.refresh_from_db()
    assert not legacy.is_active
    expected = {item["uuid"]: {"data": item, "active": True} for item in served}
    EnterpriseAcademy.objects.filter(pk=legacy.pk).delete()  # check_table counts rows beyond the catalog's
    check = check_table(expected)
    guarantee("hostile reconcile input: hostile catalog pages", events=len(cases) + 2, bad_inputs=len(cases),
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 7. Redirects: never followed, for the catalog pages nor the token endpoint
# ---------------------------------------------------------------------------------------------------

def test_redirects_write_nothing_and_send_nothing_to_the_other_host(reconcile, catalog_server, catalog_env, guarantee):
    from tests.catalog_server import CatalogServer  # pylint: disable=import-outside-toplevel

    env = catalog_env
    served = []
    for n in range(25):
        item = full_item("redirected", n)
        served.append(catalog_server.add_academy(item.pop("title"), enterprise_customer=CUSTOMER, **item))
    args = ("--enterprise-customer", CUSTOMER, "--json")
    first = reconcile(*args, env=env)
    assert first.returncode == 0 and first.report["created"] == 25, seeded(repr(first))
    before = snapshot()

    with CatalogServer(client_id=catalog_server.client_id, client_secret=catalog_server.client_secret) as other:
        for n in range(5):  # what the other host would serve: a list without the real academies
            other.add_academy(f"Impostor {n}", enterprise_customer=CUSTOMER)
        cases = [(f"page 2 answers {status} to another host", "page", status) for status in (301, 302, 303, 307, 308)]
        cases += [(f"token endpoint answers {status} to another host", "token", status) for status in (302, 307, 308)]
        cases += [("page 1 answers 302 on the same host", "same", 302)]
        for label, where, status in cases:
            if where == "page":
                catalog_server.redirect_page(2, f"{other.url}/api/v1/academies/?enterprise_customer={CUSTOMER}",
                                             status=status)
            elif where == "token":
                catalog_server.redirect_token(f"{other.oauth_url}/access_token", status=status)
            else:
                catalog_server.redirect_page(1, f"{catalog_server.url}/api/v1/academies/?page=2", status=status)
            done = reconcile(*args, "--deactivate-missing", env=env)
            line = assert_one_line_failure(done, label)
            assert f"HTTP {status}" in line and "not followed" in line and "nothing was written" in line, \
                seeded(f"{label}: {line!r}")
            assert catalog_server.client_secret not in line, seeded(f"{label}: the secret is printed: {line!r}")
            assert snapshot() == before, seeded(f"{label}: the table changed")
            assert other.requests == [], seeded(f"{label}: the other host was sent {other.requests!r}")
            catalog_server.clear_redirects()

    done = reconcile(*args, "--deactivate-missing", env=env)
    assert done.returncode == 0 and done.report["unchanged"] == 25 and done.report["deactivated"] == 0, \
        seeded(repr(done))
    check = check_table({item["uuid"]: {"data": item, "active": True} for item in served})
    guarantee("redirects: 3xx on a page or the token endpoint", events=len(cases) + 2, faults=len(cases),
              fault_kinds="301-308 to another host on page 2 and the token endpoint, 302 on the same host",
              lost=check.lost, duplicates=check.duplicates, stale=check.stale)
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])


# ---------------------------------------------------------------------------------------------------
# 8. Future-dated stored times: reconcile and repair_future_timestamps take them back
# ---------------------------------------------------------------------------------------------------

def test_future_dated_stored_times_are_repaired(reconcile, cli, guarantee):
    import datetime  # pylint: disable=import-outside-toplevel

    rng = random.Random(SEED)
    items = [full_item("future", n) for n in range(40)]
    first = reconcile("--from-file", "-", "--json", stdin=json.dumps(items))
    assert first.returncode == 0 and first.report["created"] == 40, seeded(repr(first))
    # What an unbounded consumer left behind: future times, from minutes past the bound to year 9999.
    futures = [datetime.timedelta(seconds=301 + rng.randrange(3600)), datetime.timedelta(days=365 * 50)]
    frozen = rng.sample(range(40), 20)
    now = datetime.datetime.now(datetime.timezone.utc)
    for n in frozen:
        far = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)
        when = far if n % 3 == 0 else now + rng.choice(futures)
        EnterpriseAcademy.objects.filter(uuid=items[n]["uuid"]).update(source_timestamp=when)

    # Reconcile: every listed academy changes (a new version) and half of the frozen ones are no longer
    # listed: none may be stale, every unlisted one deactivated.
    listed = [n for n in range(40) if n not in frozen[:10]]
    newer = [full_item("future", n, version=1) for n in listed]
    done = reconcile("--from-file", "-", "--json", "--deactivate-missing", stdin=json.dumps(newer))
    assert done.returncode == 0, seeded(repr(done))
    report = done.report
    assert (report["updated"], report["stale"], report["deactivated"]) == (len(listed), 0, 10), seeded(repr(done))

    # What reconcile did not write (nothing here: every frozen row was listed or deactivated) the command
    # repairs; freeze some rows again to give it work, then check it leaves nothing behind.
    again = rng.sample(listed, 5)
    for n in again:
        EnterpriseAcademy.objects.filter(uuid=items[n]["uuid"]).update(
            source_timestamp=datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc))
    repaired = cli("repair_future_timestamps", "--json")
    assert repaired.returncode == 0 and json.loads(repaired.stdout)["repaired"] == 5, seeded(repr(repaired))
    assert json.loads(cli("repair_future_timestamps", "--json").stdout)["repaired"] == 0
    latest = [full_item("future", n, version=2) for n in listed]
    done = reconcile("--from-file", "-", "--json", stdin=json.dumps(latest))
    assert done.returncode == 0 and (done.report["updated"], done.report["stale"]) == (len(listed), 0), \
        seeded(repr(done))

    bound = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=300)
    assert not EnterpriseAcademy.objects.filter(source_timestamp__gt=bound).exists(), seeded("a future time is left")
    expected = expected_of(latest)
    expected.update(expected_of([items[n] for n in frozen[:10]], active=False))
    check = check_table(expected)
    guarantee("future-dated stored times (reconcile, repair_future_timestamps)", events=40 + len(newer) + len(latest),
              faults=len(frozen) + len(again), fault_kinds="source_timestamp set in the future",
              lost=check.lost, duplicates=check.duplicates, stale=check.stale + report["stale"])
    assert (check.lost, check.duplicates, check.stale) == (0, 0, 0), seeded(check.problems[:10])
