"""Tests of academy_consumer.normalize: pure functions, no database."""

import ast
import dataclasses
import decimal
import hashlib
import json
import pathlib
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from academy_consumer import normalize
from academy_consumer.normalize import (
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_URL_LENGTH,
    NormalizedAcademy,
    Rejected,
    default_lookup_key,
    default_slug,
    extract_items,
    find_catalog_query_uuid,
    is_valid_slug,
    lookup_token,
    normalize_academy,
    normalize_event,
    parse_uuid,
)

U1 = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
U2 = "11111111-2222-3333-4444-555555555555"
U3 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
UUID1, UUID2 = uuid.UUID(U1), uuid.UUID(U2)


@pytest.fixture(autouse=True)
def _clear_caches():
    """
    Override conftest's cache-clearing fixture: these tests use no cache, no settings and no database,
    so they also run without Django (``-p no:django``).
    """
    yield


def short_id(value):
    """A short test id for any parameter (huge, deep or cyclic ones included)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "huge-int"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # too deep, or holds an int too large for repr()
        return type(value).__name__
    text = re.sub(r" at 0x[0-9a-f]+>", ">", text)  # the same id in every pytest-xdist worker, whatever the address
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)})"


def parametrize(names, values):
    return pytest.mark.parametrize(names, values, ids=short_id)


def norm(**item):
    """Normalize a minimal academy named "Data Academy" plus ``item``."""
    return normalize_academy({"name": "Data Academy", **item})


def rejected(item):
    with pytest.raises(Rejected) as info:
        normalize_academy(item)
    return info.value


def nested_list(depth, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth, leaf, key="uuid"):
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def name_hash(name):
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Purity and public API
# --------------------------------------------------------------------------------------------------

def test_module_imports_only_stdlib_slugify_and_text_unidecode():
    tree = ast.parse(pathlib.Path(normalize.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "dataclasses", "decimal", "functools", "hashlib", "re", "unicodedata", "uuid",
                        "slugify", "text_unidecode"}


# Names whose characters Unidecode and text-unidecode transliterate differently (checked below): a host with
# python-slugify and text-unidecode only (enterprise-access) and one that also has Unidecode.
DIFFERENTLY_TRANSLITERATED = ["Data™ Academy", "Єдина Academy", "חכמה Academy", "קורס Data", "ᴀᴄᴀᴅᴇᴍʏ Data",
                              "Ŋoma Academy", "Course ① Academy"]


_SLUGS_OF = """
import json, sys
if sys.argv[1] == "text_unidecode":
    sys.modules["unidecode"] = None  # as in a host without Unidecode: python-slugify falls back to text-unidecode
from academy_consumer import normalize
print(json.dumps([[normalize.default_slug(n, None), normalize.default_lookup_key(None, n, None)]
                  for n in json.loads(sys.argv[2])]))
"""


@pytest.mark.stack  # (two interpreters: python-slugify picks its transliteration at import or call time)
def test_slug_and_lookup_key_do_not_depend_on_which_transliteration_slugify_has():
    """
    python-slugify transliterates with Unidecode when it is installed, else with text-unidecode, and the two
    disagree on these names. The slug and lookup key rules fold to ASCII themselves (``ascii_fold``), so a host
    with only text-unidecode (enterprise-access) and one with Unidecode too give every academy the same slug and
    lookup key.
    """
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    import text_unidecode  # pylint: disable=import-outside-toplevel
    unidecode = pytest.importorskip("unidecode")  # in the test requirements only, never in install_requires

    assert all(unidecode.unidecode(name) != text_unidecode.unidecode(name) for name in DIFFERENTLY_TRANSLITERATED)
    results = {}
    for library in ("unidecode", "text_unidecode"):
        done = subprocess.run([sys.executable, "-c", _SLUGS_OF, library, json.dumps(DIFFERENTLY_TRANSLITERATED)],
                              capture_output=True, text=True, check=True, timeout=60)
        results[library] = json.loads(done.stdout)
    assert results["unidecode"] == results["text_unidecode"]
    assert results["text_unidecode"][0] == ["datatm-academy", "essentials_datatm_academy_yearly"]


def test_limits():
    assert (MAX_NAME_LENGTH, MAX_KEY_LENGTH, MAX_URL_LENGTH, MAX_TEXT_LENGTH) == (255, 255, 2048, 100_000)


def test_rejected_carries_reason_and_identity():
    exc = Rejected("missing name", identity="x")
    assert (exc.reason, exc.identity, str(exc)) == ("missing name", "x", "missing name")
    assert Rejected("r").identity is None


def test_normalized_academy_is_frozen():
    result = norm()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.name = "Other"


# --------------------------------------------------------------------------------------------------
# Envelope extraction
# --------------------------------------------------------------------------------------------------

@parametrize("payload", [[], [{"name": "A"}], [{"name": "A"}, 5, None, "x"]])
def test_extract_items_list_is_the_list(payload):
    assert extract_items(payload) is payload


@parametrize("key", ["results", "items", "academies", "catalogs"])
def test_extract_items_envelope_keys(key):
    items = [{"title": "A"}, {"title": "B"}]
    assert extract_items({key: items, "count": 2, "next": None}) is items


def test_extract_items_catalog_api_page():
    page = {"count": 1, "next": None, "previous": None, "results": [{"uuid": U1, "title": "Data Academy"}]}
    assert extract_items(page) == [{"uuid": U1, "title": "Data Academy"}]


@parametrize("payload, expected", [
    ({"results": [1], "items": [2], "academies": [3], "catalogs": [4]}, [1]),
    ({"results": None, "items": [2], "academies": [3]}, [2]),
    ({"results": "x", "items": {"a": 1}, "academies": [3], "catalogs": [4]}, [3]),
    ({"results": 5, "catalogs": [4]}, [4]),
])
def test_extract_items_first_key_holding_a_list_wins(payload, expected):
    assert extract_items(payload) == expected


@parametrize("key", ["name", "title", "short_name", "uuid", "academy_uuid"])
def test_extract_items_single_academy(key):
    item = {key: "x", "display_order": 1}
    assert extract_items(item) == [item]


def test_extract_items_catalogs_of_a_single_academy_are_not_an_envelope():
    item = {"uuid": U1, "name": "Data", "catalogs": [{"uuid": U2}]}
    assert extract_items(item) == [item]


def test_extract_items_results_win_over_single_academy_look():
    assert extract_items({"name": "page", "results": [{"name": "A"}]}) == [{"name": "A"}]


@parametrize("payload", [
    None, 5, 1.5, True, "academies", b"[]", {}, {"count": 0, "next": None}, {"results": "x"},
    {"results": None}, {"slug": "data"}, ("a", "b"), {"items": {"name": "x"}},
])
def test_extract_items_anything_else_is_empty(payload):
    assert extract_items(payload) == []


# --------------------------------------------------------------------------------------------------
# parse_uuid
# --------------------------------------------------------------------------------------------------

@parametrize("value", [
    U1, U1.upper(), "0F1e2D3c-4B5a-6978-8796-A5b4C3d2E1f0", U1.replace("-", ""), U1.replace("-", "").upper(),
    "{" + U1 + "}", "{" + U1.replace("-", "") + "}", "urn:uuid:" + U1, "URN:UUID:" + U1.upper(),
    "  " + U1 + "\n", UUID1,
])
def test_parse_uuid_accepts(value):
    assert parse_uuid(value) == UUID1
    assert isinstance(parse_uuid(value), uuid.UUID)


@parametrize("value", [
    None, 0, 5, UUID1.int, True, False, 1.5, float("nan"), decimal.Decimal(1), "", "   ", "abc", "not-a-uuid",
    U1[:-1], U1 + "0", U1.replace("-", "")[:-1], U1.replace("-", "") + "0",
    "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0",  # partly hyphenated
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
    "0x" + "f" * 30, "0f1e_2d3c4b5a69788796a5b4c3d2e1f0", "+" + "f" * 31,  # forms uuid.UUID() would take
    "{" + U1, U1 + "}", "urn:uuid:{" + U1 + "}", "uuid:" + U1, U1.encode(), [U1], {"uuid": U1},
    "\uff10" * 32,  # full-width digits
    " " * 1000 + U1, U1 * 100_000,
])
def test_parse_uuid_refuses(value):
    assert parse_uuid(value) is None


# --------------------------------------------------------------------------------------------------
# find_catalog_query_uuid
# --------------------------------------------------------------------------------------------------

@parametrize("item", [
    {"catalog_query_uuid": U1},
    {"catalog_query_uuid": UUID1},
    {"catalog_query_uuid": U1.upper().replace("-", "")},
    {"catalog_query": U1},
    {"catalog_query": {"uuid": U1}},
    {"catalog_query": {"catalog_query_uuid": U1}},
    {"enterprise_catalog_query": {"uuid": "{" + U1 + "}"}},
    {"enterprise_catalog_query": "urn:uuid:" + U1},
    {"catalogs": [U1]},
    {"catalogs": [{"uuid": U1}]},
    {"catalogs": [{"catalog_query_uuid": U1}]},
    {"catalogs": [{"catalog_query": {"uuid": U1}}]},
    {"catalogs": [[[{"uuid": U1}]]]},
    {"enterprise_catalogs": [{"uuid": U1}]},
    {"enterprise_catalogs": [5, None, "junk", {"uuid": 7}, {"uuid": U1}]},
])
def test_find_catalog_query_uuid_sources(item):
    assert find_catalog_query_uuid(item) == UUID1


@parametrize("item", [
    {"catalog_query_uuid": U1, "catalog_query": U2, "enterprise_catalog_query": U3},
    {"catalog_query": {"uuid": U1}, "enterprise_catalog_query": U2, "catalogs": [U3]},
    {"enterprise_catalog_query": U1, "catalogs": [U2], "enterprise_catalogs": [U3]},
    {"catalogs": [U1], "enterprise_catalogs": [U2]},
    {"catalogs": [U1, U2, U3]},
    {"catalogs": [{"uuid": 5}, {"uuid": U1}, {"uuid": U2}]},
    # an invalid value is skipped, the search goes on
    {"catalog_query_uuid": 12, "catalog_query": True, "enterprise_catalog_query": 1.0, "catalogs": [U1]},
    {"catalog_query_uuid": "junk", "catalog_query": {"uuid": 3}, "enterprise_catalogs": [{"uuid": U1}]},
    # inside a dict, the specific key wins over the catalog's own uuid
    {"catalogs": [{"uuid": U2, "catalog_query_uuid": U1}]},
    {"catalogs": [{"uuid": U2, "catalog_query": {"uuid": U1}}]},
    {"catalogs": [{"uuid": U2, "enterprise_catalog_query": 42, "catalog_query_uuid": U1}]},
])
def test_find_catalog_query_uuid_first_valid_wins(item):
    assert find_catalog_query_uuid(item) == UUID1


@parametrize("item", [
    {},
    {"name": "x", "uuid": U1},  # the academy's own uuid is not a catalog query
    {"catalog_query_uuid": None},
    {"catalog_query_uuid": 42},  # a legacy numeric query id
    {"catalog_query_uuid": True},
    {"catalog_query_uuid": 1.5},
    {"catalog_query_uuid": "not-a-uuid"},
    {"catalog_query_uuid": ""},
    {"catalog_query": {"id": 42}},
    {"catalog_query": {"uuid": 42}},
    {"catalog_query": {"title": U1}},  # only the known keys are searched
    {"catalogs": [1, 2, 3]},
    {"catalogs": [{"id": U1}]},
    {"catalogs": "junk"},
    {"enterprise_catalogs": [{"uuid": None}, [], {}]},
    {"other": U1},
])
def test_find_catalog_query_uuid_nothing_valid(item):
    assert find_catalog_query_uuid(item) is None


@parametrize("item", [None, [], U1, 5, [{"catalog_query_uuid": U1}]])
def test_find_catalog_query_uuid_of_a_non_dict(item):
    assert find_catalog_query_uuid(item) is None


def test_find_catalog_query_uuid_depth_limit():
    assert find_catalog_query_uuid({"catalogs": nested_list(18, U1)}) == UUID1
    assert find_catalog_query_uuid({"catalog_query": nested_dict(18, U1)}) == UUID1
    assert find_catalog_query_uuid({"catalogs": nested_list(25, U1)}) is None
    assert find_catalog_query_uuid({"catalog_query": nested_dict(25, U1)}) is None
    # too deep in one catalog does not stop the search in the next
    assert find_catalog_query_uuid({"catalogs": [nested_list(25, U2), U1]}) == UUID1


@parametrize("hostile", [
    nested_list(100_000, U1),
    nested_dict(100_000, U1),
    nested_dict(100_000, U1, key="catalog_query"),
])
def test_find_catalog_query_uuid_hostile_nesting_does_not_crash(hostile):
    assert find_catalog_query_uuid({"catalogs": hostile, "catalog_query": hostile}) is None


def test_find_catalog_query_uuid_cycles_do_not_crash():
    loop = []
    loop.append(loop)
    loop_dict = {}
    loop_dict["uuid"] = loop_dict
    assert find_catalog_query_uuid({"catalogs": loop, "catalog_query": loop_dict}) is None
    loop.append(U1)
    assert find_catalog_query_uuid({"catalogs": loop}) == UUID1


def test_find_catalog_query_uuid_search_is_bounded():
    wide = [[x] for x in range(20_000)]  # 40,000 values
    assert find_catalog_query_uuid({"catalogs": wide + [U1]}) is None
    assert find_catalog_query_uuid({"catalogs": [5] * 100 + [U1]}) == UUID1


# --------------------------------------------------------------------------------------------------
# lookup_token, default_lookup_key, default_slug, is_valid_slug
# --------------------------------------------------------------------------------------------------

@parametrize("text, expected", [
    ("Data Academy", "data_academy"),
    ("  Data -- Academy!!  ", "data_academy"),
    ("data_academy", "data_academy"),
    ("__data__academy__", "data_academy"),
    ("ABC123 x", "abc123_x"),
    ("Académie Über Straße", "academie_uber_strasse"),
    ("Ciência de Dados", "ciencia_de_dados"),
    ("日本語", "ri_ben_yu"),
    ("a\tb\nc", "a_b_c"),
    ("★ AI ★", "ai"),
    ("★★★", ""),
    ("", ""),
    (None, ""),
    (5, ""),
])
def test_lookup_token(text, expected):
    assert lookup_token(text) == expected


@parametrize("product_key, name, expected", [
    (None, "Data Academy", "essentials_data_academy_yearly"),
    (None, "Data", "essentials_data_academy_yearly"),
    (None, "Académie Données", "essentials_academie_donnees_academy_yearly"),
    ("", "Data Academy", "essentials_data_academy_yearly"),
    ("   ", "Data Academy", "essentials_data_academy_yearly"),
    (5, "Data Academy", "essentials_data_academy_yearly"),  # a non-string product_key is ignored
    ("data-science", "Data Academy", "essentials_data_science_academy_yearly"),
    ("Data Science Academy", "Other", "essentials_data_science_academy_yearly"),
    (None, "Academy", "essentials_academy_academy_yearly"),  # a bare "academy" stays
    (None, "Academy Academy", "essentials_academy_academy_yearly"),
    (None, "Data Academy Academy", "essentials_data_academy_academy_yearly"),  # only ONE is removed
    (None, "Academy of Data", "essentials_academy_of_data_academy_yearly"),
    (None, "Data Academies", "essentials_data_academies_academy_yearly"),
    (None, "Data_Academy", "essentials_data_academy_yearly"),
])
def test_default_lookup_key(product_key, name, expected):
    assert default_lookup_key(product_key, name, "fallback") == expected


@parametrize("product_key, name, fallback, expected", [
    (None, "★★★", U1, f"essentials_academy_{U1.replace('-', '_')}_academy_yearly"),
    (None, "★★★", "ABC123def456", "essentials_academy_abc123def456_academy_yearly"),
    (None, "", "abc", "essentials_academy_abc_academy_yearly"),
    (None, None, "abc", "essentials_academy_abc_academy_yearly"),
    ("★", "Data", "abc", "essentials_academy_abc_academy_yearly"),  # a non-blank product_key is used as is
    (None, "★★★", None, "essentials_academy_academy_yearly"),
    (None, "★★★", "", "essentials_academy_academy_yearly"),
    (None, "★★★", UUID1, f"essentials_academy_{U1.replace('-', '_')}_academy_yearly"),
])
def test_default_lookup_key_empty_token_uses_fallback(product_key, name, fallback, expected):
    assert default_lookup_key(product_key, name, fallback) == expected


@parametrize("name", ["x" * 1000, "ab " * 200, "Data " * 60 + "Academy", "é" * 300])
def test_default_lookup_key_fits(name):
    key = default_lookup_key(None, name, "fallback")
    assert len(key) <= MAX_KEY_LENGTH
    assert key.startswith("essentials_") and key.endswith("_academy_yearly")
    assert "__" not in key


def test_default_lookup_key_uses_all_the_room():
    assert len(default_lookup_key(None, "x" * 1000, "f")) == MAX_KEY_LENGTH


@parametrize("name, expected", [
    ("Data Academy", "data-academy"),
    ("  Data -- Academy!! ", "data-academy"),
    ("Académie des Données", "academie-des-donnees"),
    ("AI & ML", "ai-ml"),
    ("日本語", "ri-ben-yu"),
])
def test_default_slug(name, expected):
    assert default_slug(name, "fallback") == expected


@parametrize("name, fallback, expected", [
    ("★★★", U1, f"academy-{U1}"),
    ("!!!", "abc123def456", "academy-abc123def456"),
    ("", "abc123def456", "academy-abc123def456"),
    (None, "abc123def456", "academy-abc123def456"),
    ("★★★", UUID1, f"academy-{U1}"),
    ("★★★", None, "academy"),
    ("★★★", "", "academy"),
])
def test_default_slug_of_an_empty_slugification(name, fallback, expected):
    assert default_slug(name, fallback) == expected


@parametrize("name", ["x" * 1000, "word " * 100, "é" * 300, "★", "a-" * 200])
def test_default_slug_is_a_valid_slug(name):
    slug = default_slug(name, "fallback")
    assert is_valid_slug(slug)
    assert 0 < len(slug) <= MAX_KEY_LENGTH


@parametrize("value", ["data-academy", "Data_Academy-2", "a", "-", "_", "a" * 255, "007"])
def test_is_valid_slug_true(value):
    assert is_valid_slug(value) is True


@parametrize("value", [
    "", "data academy", "data/academy", "café", "data.academy", "a" * 256, "data\n", "\ndata", " data",
    "ｄａｔａ", None, 5, ["a"], b"data",
])
def test_is_valid_slug_false(value):
    assert is_valid_slug(value) is False


# --------------------------------------------------------------------------------------------------
# normalize_academy: item and name
# --------------------------------------------------------------------------------------------------

@parametrize("item", [None, [], [{"name": "A"}], "Data Academy", 5, True, b"{}"])
def test_item_not_a_dict(item):
    exc = rejected(item)
    assert exc.reason == "item is not a JSON object"
    assert exc.identity is None


@parametrize("item, expected", [
    ({"name": "Data Academy"}, "Data Academy"),
    ({"title": "Data Academy"}, "Data Academy"),
    ({"short_name": "Data Academy"}, "Data Academy"),
    ({"name": "A", "title": "B", "short_name": "C"}, "A"),
    ({"title": "B", "short_name": "C"}, "B"),
    ({"name": "", "title": "B"}, "B"),
    ({"name": "  \n ", "title": "", "short_name": "C"}, "C"),
    ({"name": None, "title": "B"}, "B"),
    ({"name": [], "title": "B"}, "B"),
    ({"name": ["A"], "title": "B"}, "B"),
    ({"name": {}, "title": "B"}, "B"),
    ({"name": {"rendered": None, "raw": None}, "title": "B"}, "B"),
    ({"name": {"rendered": "Data Academy"}}, "Data Academy"),
    ({"name": {"raw": "Data Academy"}}, "Data Academy"),
    ({"name": {"rendered": "Rendered", "raw": "Raw"}}, "Rendered"),
    ({"name": {"rendered": "  ", "raw": "Raw"}}, "Raw"),
    ({"name": {"rendered": ["x"], "raw": "Raw"}}, "Raw"),
    ({"title": {"rendered": 2024}}, "2024"),
    ({"name": 42}, "42"),
    ({"name": 1.5}, "1.5"),
    ({"name": decimal.Decimal("2.50")}, "2.50"),
    ({"name": "  Data \n\t  Academy  "}, "Data Academy"),
    ({"name": "\u00a0Data\u00a0\u2003Academy\u3000"}, "Data Academy"),
    ({"name": "Data\r\nAcademy"}, "Data Academy"),
    ({"name": "a" + " " * 1000 + "b"}, "a b"),  # collapsed before the length check
    ({"name": "x" * 255}, "x" * 255),
    ({"name": "Ciência de Dados"}, "Ciência de Dados"),
])
def test_name(item, expected):
    result = normalize_academy(item)
    assert result.name == expected
    assert result.fields["name"] == expected


@parametrize("item", [
    {}, {"name": None}, {"name": ""}, {"name": "   "}, {"name": "\n\t"}, {"title": "", "short_name": None},
    {"name": [], "title": {}, "short_name": ["x"]}, {"name": {"rendered": None}}, {"name": {"other": "x"}},
    {"name": object()}, {"name": b"Data"}, {"uuid": U1}, {"description": "x"},
    {"name": 10 ** 5000},  # too large for str(): unusable
])
def test_missing_name(item):
    assert rejected(item).reason == "missing name"


@parametrize("name", ["x" * 256, "a " * 200, "x" * 10_000_000])
def test_name_too_long(name):
    exc = rejected({"name": name})
    assert exc.reason.startswith("name is too long")
    assert exc.identity == " ".join(name.split())[:MAX_NAME_LENGTH]


@parametrize("name", [
    "Data\x00Academy", "Data\x1b[31mAcademy", "\x07", "Data\x7f", "Data\x80", "Data\x9f", "Data\x08",
    "Data\ud800Academy", {"rendered": "Da\x00ta"},
])
def test_name_with_control_characters(name):
    exc = rejected({"name": name, "uuid": U1})
    assert "control character" in exc.reason
    assert "\n" not in exc.reason


# --------------------------------------------------------------------------------------------------
# normalize_academy: uuid
# --------------------------------------------------------------------------------------------------

@parametrize("item", [
    {"uuid": U1}, {"uuid": U1.upper()}, {"uuid": "{" + U1 + "}"}, {"uuid": U1.replace("-", "")},
    {"uuid": "urn:uuid:" + U1}, {"uuid": UUID1}, {"academy_uuid": U1}, {"uuid": None, "academy_uuid": U1},
    {"uuid": U1, "academy_uuid": U2},
])
def test_uuid(item):
    result = norm(**item)
    assert result.uuid == UUID1
    assert result.fields["uuid"] == UUID1
    assert isinstance(result.fields["uuid"], uuid.UUID)


@parametrize("item", [{}, {"uuid": None}, {"academy_uuid": None}, {"uuid": None, "academy_uuid": None}])
def test_uuid_absent(item):
    result = norm(**item)
    assert result.uuid is None
    assert "uuid" not in result.fields
    assert "uuid" not in result.defaults


@parametrize("item", [
    {"uuid": "not-a-uuid"}, {"uuid": 5}, {"uuid": 0}, {"uuid": True}, {"uuid": False}, {"uuid": 1.5},
    {"uuid": ""}, {"uuid": [U1]}, {"uuid": {"uuid": U1}}, {"uuid": U1[:-1]}, {"academy_uuid": "junk"},
    {"academy_uuid": 7}, {"uuid": "junk", "academy_uuid": U1}, {"uuid": "x" * 1_000_000},
])
def test_uuid_invalid(item):
    exc = rejected({"name": "Data Academy", **item})
    assert exc.reason.startswith("invalid uuid")
    assert exc.identity == "Data Academy"
    assert len(exc.reason) < 200


# --------------------------------------------------------------------------------------------------
# normalize_academy: catalog_query_uuid
# --------------------------------------------------------------------------------------------------

@parametrize("item", [
    {"catalog_query_uuid": U2}, {"catalog_query": {"uuid": U2}}, {"enterprise_catalog_query": U2.upper()},
    {"catalogs": [{"uuid": U2}]}, {"enterprise_catalogs": [{"catalog_query_uuid": U2}]},
    {"catalog_query_uuid": 17, "catalogs": [{"uuid": U2}]},
])
def test_catalog_query_uuid_in_fields(item):
    result = norm(uuid=U1, **item)
    assert result.fields["catalog_query_uuid"] == UUID2
    assert "catalog_query_uuid" not in result.defaults


@parametrize("item", [
    {}, {"catalog_query_uuid": None}, {"catalog_query_uuid": 17}, {"catalog_query_uuid": True},
    {"catalog_query_uuid": 2.5}, {"catalog_query_uuid": "junk"}, {"catalog_query": {"id": 3}},
    {"catalogs": [1, 2]}, {"catalogs": "junk"}, {"catalogs": nested_list(50_000, U2)},
])
def test_catalog_query_uuid_invalid_is_ignored_and_absent(item):
    result = norm(uuid=U1, **item)
    assert "catalog_query_uuid" not in result.fields
    assert "catalog_query_uuid" not in result.defaults


# --------------------------------------------------------------------------------------------------
# normalize_academy: slug
# --------------------------------------------------------------------------------------------------

@parametrize("slug, expected", [
    ("data", "data"), ("Data_Academy-2", "Data_Academy-2"), (" data-1 ", "data-1"), ("s" * 255, "s" * 255),
])
def test_valid_payload_slug(slug, expected):
    result = norm(slug=slug)
    assert result.fields["slug"] == expected
    assert "slug" not in result.defaults


@parametrize("slug", [
    "Data Academy!", "café", "data/academy", "s" * 256, 5, True, ["data"], {"slug": "data"}, "data\n-x",
    "x" * 1_000_000,
])
def test_invalid_payload_slug_is_replaced_in_fields(slug):
    result = norm(slug=slug)
    assert result.fields["slug"] == "data-academy"
    assert "slug" not in result.defaults


@parametrize("item", [{}, {"slug": None}, {"slug": ""}, {"slug": "   "}])
def test_absent_slug_is_a_default(item):
    result = norm(**item)
    assert result.defaults["slug"] == "data-academy"
    assert "slug" not in result.fields


def test_slug_of_a_symbol_name_uses_the_uuid():
    result = normalize_academy({"name": "★★★", "uuid": U1.upper()})
    assert result.defaults["slug"] == f"academy-{U1}"
    assert normalize_academy({"name": "★★★", "uuid": U1, "slug": "bad slug"}).fields["slug"] == f"academy-{U1}"


def test_slug_of_a_symbol_name_without_uuid_uses_a_stable_hash():
    first = normalize_academy({"name": "  ★★★  "})
    again = normalize_academy({"title": "★★★"})
    assert first.defaults["slug"] == again.defaults["slug"] == f"academy-{name_hash('★★★')}"
    assert normalize_academy({"name": "☆☆☆"}).defaults["slug"] != first.defaults["slug"]


def test_slug_is_never_empty():
    for name in ["★", "!!!", "—", "🙂"]:
        slug = normalize_academy({"name": name}).defaults["slug"]
        assert is_valid_slug(slug)


# --------------------------------------------------------------------------------------------------
# normalize_academy: stripe_price_lookup_key and product_key
# --------------------------------------------------------------------------------------------------

@parametrize("value, expected", [
    ("essentials_x_academy_yearly", "essentials_x_academy_yearly"), ("  key_1  ", "key_1"),
    ("Any Key!", "Any Key!"), ("k" * 255, "k" * 255),
])
def test_payload_lookup_key(value, expected):
    result = norm(stripe_price_lookup_key=value, product_key="ignored")
    assert result.fields["stripe_price_lookup_key"] == expected
    assert "stripe_price_lookup_key" not in result.defaults


@parametrize("item, expected", [
    ({}, "essentials_data_academy_yearly"),
    ({"stripe_price_lookup_key": None}, "essentials_data_academy_yearly"),
    ({"product_key": "data-science"}, "essentials_data_science_academy_yearly"),
    ({"product_key": "ML Academy"}, "essentials_ml_academy_yearly"),
    ({"product_key": ""}, "essentials_data_academy_yearly"),
    ({"product_key": None}, "essentials_data_academy_yearly"),
    ({"product_key": 42}, "essentials_data_academy_yearly"),
    ({"product_key": ["x"]}, "essentials_data_academy_yearly"),
    ({"name": "Ciência Academy"}, "essentials_ciencia_academy_yearly"),
    ({"name": "Academy"}, "essentials_academy_academy_yearly"),
    ({"name": "★★★", "uuid": U1}, f"essentials_academy_{U1.replace('-', '_')}_academy_yearly"),
    ({"name": "★★★"}, f"essentials_academy_{name_hash('★★★')}_academy_yearly"),
])
def test_default_lookup_key_on_create(item, expected):
    result = normalize_academy({"name": "Data Academy", **item})
    assert result.defaults["stripe_price_lookup_key"] == expected
    assert "stripe_price_lookup_key" not in result.fields


def test_product_key_is_not_stored():
    result = norm(product_key="data-science")
    assert "product_key" not in result.fields
    assert "product_key" not in result.defaults


@parametrize("value", ["", "   ", 5, True, 1.5, ["k"], {"key": "k"}, "k" * 256, "a\x00b", "a\nb",
                       "x" * 10_000_000])
def test_invalid_lookup_key(value):
    exc = rejected({"name": "Data Academy", "uuid": U1, "stripe_price_lookup_key": value})
    assert "stripe_price_lookup_key" in exc.reason
    assert exc.identity == U1


@parametrize("value", ["p" * 256, "x" * 10_000_000, "data\x00", "da\ud800ta"])
def test_unusable_product_key_is_rejected_when_used(value):
    assert "product_key" in rejected({"name": "Data", "product_key": value}).reason
    assert norm(product_key=value, stripe_price_lookup_key="k").fields["stripe_price_lookup_key"] == "k"


# --------------------------------------------------------------------------------------------------
# normalize_academy: stripe_product_id
# --------------------------------------------------------------------------------------------------

@parametrize("value, expected", [("prod_123", "prod_123"), ("  prod_1 ", "prod_1"), ("", ""), ("  ", "")])
def test_payload_product_id(value, expected):
    result = norm(stripe_product_id=value)
    assert result.fields["stripe_product_id"] == expected
    assert "stripe_product_id" not in result.defaults


@parametrize("item", [{}, {"stripe_product_id": None}])
def test_absent_product_id_is_an_empty_default(item):
    result = norm(**item)
    assert result.defaults["stripe_product_id"] == ""
    assert "stripe_product_id" not in result.fields


@parametrize("value", [5, True, 1.5, ["prod"], {"id": "prod"}, "p" * 256, "prod\x00", "x" * 10_000_000])
def test_invalid_product_id(value):
    assert "stripe_product_id" in rejected({"name": "Data", "stripe_product_id": value}).reason


# --------------------------------------------------------------------------------------------------
# normalize_academy: display_order
# --------------------------------------------------------------------------------------------------

@parametrize("value, expected", [
    (0, 0), (3, 3), ("3", 3), (" 7 ", 7), ("0", 0), ("007", 7), ("+4", 4), ("-0", 0), (2.0, 2), (0.0, 0),
    (2_147_483_647, 2_147_483_647), ("2147483647", 2_147_483_647),
])
def test_display_order(value, expected):
    result = norm(display_order=value)
    assert result.fields["display_order"] == expected
    assert isinstance(result.fields["display_order"], int) and not isinstance(result.fields["display_order"], bool)
    assert "display_order" not in result.defaults


@parametrize("item", [{}, {"display_order": None}])
def test_absent_display_order_is_a_zero_default(item):
    result = norm(**item)
    assert result.defaults["display_order"] == 0
    assert "display_order" not in result.fields


@parametrize("value, shown", [
    (-1, "-1"), ("-3", "'-3'"), (-2.0, "-2.0"), (True, "True"), (False, "False"), (1.5, "1.5"), ("1.5", "'1.5'"),
    ("2.0", "'2.0'"), ("three", "'three'"), ("", "''"), ("  ", "'  '"), ("1e3", "'1e3'"), ("0x10", "'0x10'"),
    ("٣", "'٣'"), (float("nan"), "nan"), (float("inf"), "inf"), ([1], "list"), ({"v": 1}, "dict"),
    (decimal.Decimal(3), "Decimal"), (2 ** 31, str(2 ** 31)), ("9" * 30, "'999"), (10 ** 5000, "very large"),
    ("1" * 10_000_000, "'111"),
])
def test_invalid_display_order(value, shown):
    exc = rejected({"name": "Data", "uuid": U1, "display_order": value})
    assert exc.reason.startswith("display_order")
    assert shown in exc.reason
    assert len(exc.reason) < 200
    assert exc.identity == U1


@parametrize("value", [-1, "-3", -2.0])
def test_negative_display_order_says_so(value):
    assert "negative" in rejected({"name": "Data", "display_order": value}).reason


# --------------------------------------------------------------------------------------------------
# normalize_academy: is_active
# --------------------------------------------------------------------------------------------------

@parametrize("item, expected", [
    ({}, True), ({"is_active": None}, True), ({"is_active": True}, True), ({"is_active": False}, False),
    ({"is_active": "true"}, True), ({"is_active": "false"}, False), ({"is_active": " TRUE "}, True),
    ({"is_active": "False"}, False),
])
def test_is_active_is_always_in_fields(item, expected):
    result = norm(**item)
    assert result.fields["is_active"] is expected
    assert "is_active" not in result.defaults


@parametrize("value", [1, 0, 1.0, "yes", "no", "1", "0", "", "t", ["true"], {"v": True}, "x" * 10_000_000])
def test_invalid_is_active(value):
    assert rejected({"name": "Data", "is_active": value}).reason.startswith("is_active must be true or false")


# --------------------------------------------------------------------------------------------------
# normalize_academy: description, long_description, thumbnail_url
# --------------------------------------------------------------------------------------------------

@parametrize("item, expected", [
    ({"short_description": "Short"}, "Short"),
    ({"description": "Desc"}, "Desc"),
    ({"short_description": "Short", "description": "Desc"}, "Short"),
    ({"short_description": None, "description": "Desc"}, "Desc"),
    ({"short_description": "", "description": "Desc"}, "Desc"),
    ({"short_description": "  ", "description": None}, ""),
    ({"description": ""}, ""),
    ({"description": "  <p>Hi</p>\n "}, "<p>Hi</p>"),
    ({"description": {"rendered": "<p>R</p>", "raw": "R"}}, "<p>R</p>"),
    ({"description": {"raw": "R"}}, "R"),
    ({"description": 5}, "5"),
    ({"description": "line 1\n\tline 2\r\nline 3"}, "line 1\n\tline 2\r\nline 3"),
    ({"description": "d" * MAX_TEXT_LENGTH}, "d" * MAX_TEXT_LENGTH),
])
def test_description(item, expected):
    result = norm(**item)
    assert result.fields["description"] == expected


@parametrize("item, expected", [
    ({"long_description": " Long "}, "Long"),
    ({"long_description": ""}, ""),
    ({"long_description": {"rendered": "<b>L</b>"}}, "<b>L</b>"),
    ({"long_description": "l" * MAX_TEXT_LENGTH}, "l" * MAX_TEXT_LENGTH),
])
def test_long_description(item, expected):
    assert norm(**item).fields["long_description"] == expected


@parametrize("item, expected", [
    ({"image": "https://x/i.png"}, "https://x/i.png"),
    ({"thumbnail_url": " https://x/t.png "}, "https://x/t.png"),
    ({"image": "https://x/i.png", "thumbnail_url": "https://x/t.png"}, "https://x/i.png"),
    ({"image": None, "thumbnail_url": "https://x/t.png"}, "https://x/t.png"),
    ({"image": "", "thumbnail_url": "https://x/t.png"}, "https://x/t.png"),
    ({"image": {"url": "https://x/u.png"}}, "https://x/u.png"),
    ({"image": {"src": "https://x/s.png"}}, "https://x/s.png"),
    ({"image": {"url": "https://x/u.png", "src": "https://x/s.png"}}, "https://x/u.png"),
    ({"image": {"url": None, "src": "https://x/s.png"}}, "https://x/s.png"),
    ({"image": ""}, ""),
    ({"image": "h" * MAX_URL_LENGTH}, "h" * MAX_URL_LENGTH),
])
def test_thumbnail_url(item, expected):
    assert norm(**item).fields["thumbnail_url"] == expected


@parametrize("item", [{}, {"description": None, "short_description": None, "long_description": None,
                           "image": None, "thumbnail_url": None}])
def test_absent_texts_are_not_carried(item):
    result = norm(**item)
    for field in ("description", "long_description", "thumbnail_url"):
        assert field not in result.fields
        assert field not in result.defaults


@parametrize("item, reason", [
    ({"description": ["x"]}, "description is not text"),
    ({"short_description": {"html": "x"}}, "short_description is not text"),
    ({"long_description": object()}, "long_description is not text"),
    ({"image": ["https://x"]}, "image is not text"),
    ({"image": {"href": "https://x"}}, "image is not text"),
    ({"thumbnail_url": 5j}, "thumbnail_url is not text"),
    ({"description": "d" * (MAX_TEXT_LENGTH + 1)}, "description is too long"),
    ({"short_description": "d" * 10_000_000}, "description is too long"),
    ({"long_description": "l" * (MAX_TEXT_LENGTH + 1)}, "long_description is too long"),
    ({"image": "h" * (MAX_URL_LENGTH + 1)}, "thumbnail_url is too long"),
    ({"thumbnail_url": {"x": 1}}, "thumbnail_url is not text"),
    ({"description": "a\x00b"}, "description contains a control character"),
    ({"description": "a\x1bb"}, "description contains a control character"),
    ({"description": "a\x0bb"}, "description contains a control character"),
    ({"description": "a\x7fb"}, "description contains a control character"),
    ({"description": "a\x85b"}, "description contains a control character"),
    ({"description": "a\ud800b"}, "description contains a control character"),
    ({"long_description": "\x01"}, "long_description contains a control character"),
    ({"image": "https://x/\x00"}, "thumbnail_url contains a control character"),
])
def test_invalid_texts(item, reason):
    assert rejected({"name": "Data", **item}).reason.startswith(reason)


# --------------------------------------------------------------------------------------------------
# normalize_academy: tags
# --------------------------------------------------------------------------------------------------

@parametrize("tags, expected", [
    ([], []),
    (["AI", "ML"], ["AI", "ML"]),
    ([{"id": 1, "title": "AI", "description": "d"}, {"id": 2, "title": "ML"}], ["AI", "ML"]),
    ([" AI ", {"title": " ML "}], ["AI", "ML"]),
    (["ML", "AI", "ML", {"title": "AI"}], ["ML", "AI"]),
    (["ai", "AI"], ["ai", "AI"]),
    (["", "  ", None, 5, 1.5, [], ["AI"], {}, {"id": 1}, {"title": None}, {"title": ""}, {"title": []}, "AI"],
     ["AI"]),
    ([{"title": {"rendered": "Rich"}}], ["Rich"]),
    (["t" * MAX_NAME_LENGTH], ["t" * MAX_NAME_LENGTH]),
])
def test_tags(tags, expected):
    assert norm(tags=tags).fields["tags"] == expected


def test_many_tags():
    tags = [f"tag {i % 1000}" for i in range(100_000)]
    assert norm(tags=tags).fields["tags"] == [f"tag {i}" for i in range(1000)]


def test_absent_tags_are_not_carried():
    for result in (norm(), norm(tags=None)):
        assert "tags" not in result.fields
        assert "tags" not in result.defaults


@parametrize("tags, reason", [
    ("AI, ML", "tags must be a list"), ({"title": "AI"}, "tags must be a list"), (5, "tags must be a list"),
    (("AI",), "tags must be a list"), (True, "tags must be a list"),
    (["t" * (MAX_NAME_LENGTH + 1)], "tag title is too long"), (["A\x00I"], "tag title"),
    ([{"title": "A\nI"}], "tag title"),
])
def test_invalid_tags(tags, reason):
    assert rejected({"name": "Data", "tags": tags}).reason.startswith(reason)


# --------------------------------------------------------------------------------------------------
# normalize_academy: whole items, fields vs defaults, identity
# --------------------------------------------------------------------------------------------------

def test_catalog_api_result():
    item = {
        "uuid": U1, "title": "Data Academy", "short_description": "Learn data.", "long_description": "<p>All</p>",
        "image": "https://img/data.png",
        "tags": [{"id": 1, "title": "Data", "description": "d"}, {"id": 2, "title": "SQL", "description": "s"}],
    }
    result = normalize_academy(item)
    assert result == NormalizedAcademy(
        name="Data Academy",
        uuid=UUID1,
        fields={
            "name": "Data Academy", "uuid": UUID1, "is_active": True, "description": "Learn data.",
            "long_description": "<p>All</p>", "thumbnail_url": "https://img/data.png", "tags": ["Data", "SQL"],
        },
        defaults={
            "slug": "data-academy", "stripe_price_lookup_key": "essentials_data_academy_yearly",
            "stripe_product_id": "", "display_order": 0,
        },
    )


def test_billing_fixture_item():
    item = {
        "name": {"rendered": "ML  Academy"}, "academy_uuid": U1.upper(), "slug": "ml", "product_key": "ml",
        "stripe_product_id": "prod_1", "stripe_price_lookup_key": "essentials_ml_academy_yearly",
        "display_order": "2", "is_active": "false", "catalog_query": {"uuid": U2},
    }
    result = normalize_academy(item)
    assert result.defaults == {}
    assert result.fields == {
        "name": "ML Academy", "uuid": UUID1, "slug": "ml", "stripe_product_id": "prod_1",
        "stripe_price_lookup_key": "essentials_ml_academy_yearly", "display_order": 2, "is_active": False,
        "catalog_query_uuid": UUID2,
    }


ALL_FIELDS = {"name", "uuid", "slug", "catalog_query_uuid", "stripe_product_id", "stripe_price_lookup_key",
              "display_order", "is_active", "description", "long_description", "thumbnail_url", "tags"}


@parametrize("item", [
    {"name": "A"},
    {"name": "A", "slug": "a", "stripe_price_lookup_key": "k", "stripe_product_id": "p", "display_order": 1},
    {"name": "A", "slug": "bad slug", "display_order": None, "stripe_product_id": None},
])
def test_fields_and_defaults_are_disjoint_model_fields(item):
    result = normalize_academy(item)
    assert not set(result.fields) & set(result.defaults)
    assert set(result.fields) | set(result.defaults) <= ALL_FIELDS
    assert {"slug", "stripe_price_lookup_key", "stripe_product_id", "display_order"} <= (
        set(result.fields) | set(result.defaults))


def test_input_is_not_modified():
    item = {"name": " A ", "tags": [" x "], "catalogs": [{"uuid": U1}]}
    snapshot = repr(item)
    normalize_academy(item)
    assert repr(item) == snapshot


@parametrize("item, identity", [
    ({"uuid": U1.upper(), "name": "Data", "display_order": -1}, U1),
    ({"academy_uuid": "{" + U1 + "}", "display_order": -1}, U1),
    ({"uuid": U1}, U1),  # missing name
    ({"uuid": "junk", "name": "  Data \n Academy "}, "Data Academy"),
    ({"title": {"rendered": "Data"}, "is_active": "maybe"}, "Data"),
    ({"uuid": 5, "title": ["x"], "short_name": 7}, "7"),
    ({"uuid": "junk"}, None),
    ({}, None),
    ({"name": "x" * 1000}, "x" * MAX_NAME_LENGTH),
])
def test_rejection_identity(item, identity):
    assert rejected(item).identity == identity


# --------------------------------------------------------------------------------------------------
# Hostile input: only a NormalizedAcademy or a Rejected with a short one-line reason, never another error
# --------------------------------------------------------------------------------------------------

def _cyclic_list():
    value = []
    value.append(value)
    return value


def _cyclic_dict():
    """A dict that holds itself (under the keys a normalization reads)."""
    value = {}
    value["uuid"] = value
    value["rendered"] = value
    value["title"] = value
    return value


HOSTILE_VALUES = [
    None, True, False, 0, -1, 2 ** 64, 10 ** 5000, 1.5, float("nan"), float("inf"), 1j, decimal.Decimal("NaN"),
    "", " ", "x" * 1_000_000, "\x00", "\ud800", "\n\r\t", "{}", "[]", b"bytes", bytearray(b"x"), object(),
    [], [[]], {}, {"rendered": None}, {"rendered": {"rendered": "x"}}, {"url": ["x"]}, {"title": 5},
    nested_list(50_000, "x"), nested_dict(50_000, "x"), nested_dict(50_000, "x", key="rendered"),
    _cyclic_list(), _cyclic_dict(), ("tuple",), {"set"}, frozenset(), range(3), Exception("boom"),
]
HOSTILE_KEYS = [
    "name", "title", "short_name", "uuid", "academy_uuid", "slug", "product_key", "stripe_product_id",
    "stripe_price_lookup_key", "display_order", "is_active", "description", "short_description",
    "long_description", "image", "thumbnail_url", "tags", "catalog_query_uuid", "catalog_query",
    "enterprise_catalog_query", "catalogs", "enterprise_catalogs",
]


@parametrize("key", HOSTILE_KEYS)
def test_hostile_values_everywhere(key):
    for value in HOSTILE_VALUES:
        try:
            result = normalize_academy({"name": "Data Academy", "uuid": U1, key: value})
        except Rejected as exc:
            assert isinstance(exc.reason, str) and exc.reason
            assert "\n" not in exc.reason and "\r" not in exc.reason
            assert len(exc.reason) < 200
            assert exc.identity in (U1, "Data Academy")
        else:
            assert isinstance(result, NormalizedAcademy)
            assert result.fields["name"]
            assert not set(result.fields) & set(result.defaults)


@parametrize("value", HOSTILE_VALUES)
def test_hostile_envelopes(value):
    items = extract_items(value)
    assert isinstance(items, list)
    for key in ("results", "items", "academies", "catalogs"):
        assert isinstance(extract_items({key: value}), list)


@parametrize("value", HOSTILE_VALUES)
def test_hostile_helpers(value):
    assert parse_uuid(value) is None
    assert isinstance(lookup_token(value), str)
    assert isinstance(is_valid_slug(value), bool)
    assert find_catalog_query_uuid({"catalogs": value}) is None


# --------------------------------------------------------------------------------------------------
# normalize_event: the typed record of an event, field by field, gives what the catalog path gives
# --------------------------------------------------------------------------------------------------

def test_event_record_maps_field_by_field():
    record = {"uuid": U1.upper(), "title": "  Data \t Academy ", "short_description": " Learn ", "long_description": "",
              "image": "https://img/d.png", "tags": [" Data ", "", "Data", "SQL"], "slug": "data",
              "product_key": "data", "stripe_product_id": " prod_1 ", "display_order": 0, "is_active": False,
              "catalog_query_uuid": U2}
    assert normalize_event(record) == NormalizedAcademy(
        name="Data Academy", uuid=UUID1,
        fields={"name": "Data Academy", "uuid": UUID1, "is_active": False, "catalog_query_uuid": UUID2,
                "slug": "data", "stripe_product_id": "prod_1", "display_order": 0, "description": "Learn",
                "long_description": "", "thumbnail_url": "https://img/d.png", "tags": ["Data", "SQL"]},
        defaults={"stripe_price_lookup_key": "essentials_data_academy_yearly"})


def test_event_record_with_only_the_required_fields():
    result = normalize_event({"uuid": U1, "title": "Data Academy", "tags": []})
    assert result.fields == {"name": "Data Academy", "uuid": UUID1, "is_active": True, "tags": []}
    assert set(result.defaults) == {"slug", "stripe_price_lookup_key", "stripe_product_id", "display_order"}


@parametrize("record, reason, identity", [
    ({"uuid": U1, "title": "  ", "tags": []}, "missing name", U1),
    ({"uuid": "not-a-uuid", "title": "Data", "tags": []}, "invalid uuid 'not-a-uuid' in uuid", "Data"),
    ({"uuid": U1, "title": "Data", "tags": [], "display_order": -1}, "display_order must not be negative", U1),
    ({"uuid": U1, "title": "Data", "tags": ["a\x00"]}, "tag title 'a\\x00' contains a control character", U1),
    ({"uuid": U1, "title": "Data", "tags": [], "image": "x" * (MAX_URL_LENGTH + 1)}, "thumbnail_url is too long", U1),
])
def test_event_record_rejections(record, reason, identity):
    with pytest.raises(Rejected) as info:
        normalize_event(record)
    assert info.value.reason.startswith(reason) and info.value.identity == identity


# What an event record can hold: the types of the event schema (text, whole numbers of an Avro long, booleans,
# a list of texts), with the values the rules care about over-represented: blanks, control characters and
# lone surrogates, lengths around the limits, UUID spellings, slugs, numbers around the bounds.
_UUID_TEXTS = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()),
                        st.uuids().map(lambda u: "{%s}" % u), st.uuids().map(lambda u: f" urn:uuid:{u} "))
_ANY_TEXT = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=20)
_TEXTS = st.one_of(
    _ANY_TEXT, st.sampled_from(["", " ", " \t\n", "\x00", "a\x1fb", "\ud800", "x\x85y", "Data Academy", "data-academy",
                                "bad slug", "true", "False", "12", "-3", "2.0"]),
    st.integers(250, 260).map(lambda n: "k" * n), st.integers(2040, 2055).map(lambda n: "u" * n),
    st.integers(99_998, 100_002).map(lambda n: "d" * n), _UUID_TEXTS)
_LONGS = st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.sampled_from([0, -1, 1, 2 ** 31 - 1, 2 ** 31, -2 ** 63]))
_RECORDS = st.fixed_dictionaries(
    {},
    optional={"uuid": st.one_of(_UUID_TEXTS, st.uuids(), _TEXTS), "title": _TEXTS,
              "tags": st.lists(_TEXTS, max_size=6) | st.integers(999, 1002).map(lambda n: [str(i) for i in range(n)]),
              **{name: _TEXTS for name in ("short_description", "long_description", "image", "slug", "product_key",
                                           "stripe_product_id", "stripe_price_lookup_key")},
              "catalog_query_uuid": st.one_of(_UUID_TEXTS, _TEXTS), "display_order": _LONGS,
              "is_active": st.booleans()})


def _verdict(normalizer, record):
    try:
        return normalizer(record)
    except Rejected as exc:
        return ("rejected", exc.reason, exc.identity)


@settings(max_examples=int(__import__("os").environ.get("ACADEMY_NORMALIZE_EXAMPLES", 1500)), deadline=None)
@given(_RECORDS)
def test_event_mapping_and_catalog_path_agree_on_every_typed_record(record):
    """The event mapping gives the catalog path's ``NormalizedAcademy``, or its rejection reason and identity."""
    assert _verdict(normalize_event, record) == _verdict(normalize_academy, dict(record))
