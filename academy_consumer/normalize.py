"""
Normalization of academy payloads: pure functions, no Django, no Kafka.

A payload becomes a :class:`NormalizedAcademy`, or raises :class:`Rejected` with a one-line reason, in two
steps: **the source's shape** says where each value is, then **one set of value rules** says what the value
must be. ``fields`` holds what the payload carries (applied on create and on update); ``defaults`` holds
values used only when a row is created (on update an absent field keeps its stored value). The two dicts
never share a key.

Two shapes, one entry point each:

- ``normalize_academy(item)``: a catalog item from any source (catalog REST API, fixtures, hand-written
  files, ``reconcile_academies``). It finds each value among the catalog's envelopes and aliases: the name
  in ``name``/``title``/``short_name`` as a string, rich text (``rendered``, then ``raw``) or another
  scalar; the uuid in ``uuid``/``academy_uuid``; the catalog query anywhere in ``catalog_query_uuid``,
  ``catalog_query``, ``enterprise_catalog_query``, ``catalogs``, ``enterprise_catalogs``
  (:func:`find_catalog_query_uuid`); the description in ``short_description`` then ``description``, the
  image in ``image`` (a string or a dict with ``url``/``src``) then ``thumbnail_url``; tags as strings or
  ``{"title": ...}`` dicts. Not a dict -> rejected ("item is not a JSON object").
- ``normalize_event(record)``: the typed Avro record of an academy event (the fields of
  ``academy_consumer_signals.data.AcademyData``, as ``decode.py`` reads them and ``academy_data_to_dict``
  writes them: uuids as text, ``None`` dropped), mapped field by field: ``title`` is the name, ``uuid``
  the uuid, ``short_description``, ``long_description`` and ``image`` the texts, ``tags`` the tag titles.
  It gives what ``normalize_academy`` gives for the same record, rejection reasons included
  (``tests/test_normalize.py`` checks it on generated records).

The value rules (``_academy``, one function per rule, applied in this order, which is also the order a
rejection is found in):

- name (``_name``): stripped, inner whitespace runs collapsed. Missing, longer than 255 characters, or
  containing a control character (or an unpaired surrogate) -> rejected. Always in ``fields``.
- uuid (``_academy_uuid``): parsed by :func:`parse_uuid`. Absent/None -> no uuid; anything else unparseable
  (an int, a bool, ``""``, junk) -> rejected.
- is_active (``_is_active``): a bool or "true"/"false" -> ``fields``; absent/None -> True (always in
  ``fields``: a listed or announced academy is live); anything else -> rejected.
- catalog_query_uuid: a valid UUID -> ``fields``; invalid values are ignored; nothing -> key absent
  (keep the stored value).
- slug (``_slug``): a valid payload slug -> ``fields``; a non-empty invalid one -> ``fields`` gets
  :func:`default_slug`; absent/None/blank -> ``defaults`` gets :func:`default_slug`.
- stripe_price_lookup_key (``_lookup_key``): a non-empty payload string (stripped, <= 255) -> ``fields``;
  absent/None -> ``defaults`` gets :func:`default_lookup_key` (from ``product_key`` when it is a non-blank
  string -- then it must fit 255 characters without control characters, else rejected -- else from the
  name); anything else -> rejected. ``product_key`` itself is never stored.
- stripe_product_id (``_product_id``): a payload string (stripped, <= 255) -> ``fields``; absent/None ->
  ``defaults`` gets ``""``; a non-string -> rejected.
- display_order (``_display_order``): an int, an integer-looking string or a whole float, 0..2**31-1 ->
  ``fields``; absent/None -> ``defaults`` gets 0; anything else -> rejected.
- description / long_description / thumbnail_url (``_text_field``): present -> ``fields`` (stripped, may be
  empty); longer than 100,000 characters (descriptions) or 2,048 (the image URL), not text, or holding a
  control character other than tab/newline/CR -> rejected.
- tags (``_tags``): tag titles -> ``fields`` (stripped, order kept, duplicates and empty titles dropped);
  not a list, more than 1,000 distinct titles, or a title over 255 characters or with a control character
  -> rejected; absent/None -> not in ``fields``.
- envelope (:func:`extract_items`): see its docstring.

Uniqueness of slug and lookup key across rows is the apply layer's job (``apply.py``), not this module's.
docs/reference/rules.md lists every rule with the function that implements it.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import hashlib
import re
import unicodedata
import uuid

from slugify import slugify
from text_unidecode import unidecode

MAX_NAME_LENGTH = 255
MAX_KEY_LENGTH = 255  # slug, stripe_price_lookup_key, stripe_product_id (and product_key)
MAX_URL_LENGTH = 2048
MAX_TEXT_LENGTH = 100_000  # description, long_description
MAX_TAGS = 1_000  # distinct tag titles
MAX_DISPLAY_ORDER = 2_147_483_647  # PositiveIntegerField's range on every supported database
MAX_SEARCH_DEPTH = 20  # catalog query search: deeper nesting is ignored
MAX_SEARCH_NODES = 10_000  # catalog query search: values visited at most

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.I)
_SLUG_RE = re.compile(r"[-a-zA-Z0-9_]+")  # django.core.validators.validate_slug
_INT_RE = re.compile(r"[+-]?[0-9]+")
_TOKEN_SEPARATORS_RE = re.compile(r"[^a-z0-9]+")
# Control characters (Unicode category Cc) and unpaired surrogates (not encodable, no database stores them).
_SURROGATES_RE = re.compile("[\ud800-\udfff]")
_BAD_IN_LINE_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_IN_TEXT_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # tab, LF, CR allowed

_NAME_KEYS = ("name", "title", "short_name")
_UUID_KEYS = ("uuid", "academy_uuid")
_QUERY_KEYS = ("catalog_query_uuid", "catalog_query", "enterprise_catalog_query", "catalogs", "enterprise_catalogs")
_NESTED_QUERY_KEYS = ("catalog_query_uuid", "catalog_query", "enterprise_catalog_query", "uuid")
_ENVELOPE_KEYS = ("results", "items", "academies", "catalogs")
_TEXT_FIELDS = ("description", "long_description", "thumbnail_url")
_TEXT_LIMITS = (MAX_TEXT_LENGTH, MAX_TEXT_LENGTH, MAX_URL_LENGTH)
_CATALOG_TEXT_KEYS = (("short_description", "description"), ("long_description",), ("image", "thumbnail_url"))
_LOOKUP_PREFIX, _LOOKUP_SUFFIX = "essentials_", "_academy_yearly"


class Rejected(Exception):
    """
    An item that cannot be normalized.

    ``reason`` is one short readable line (values in it are truncated ``repr``s, so never a newline).
    ``identity`` is the academy uuid string when the payload's uuid is valid, else its name (whitespace
    collapsed, cut to 255 characters), else None.
    """

    def __init__(self, reason, identity=None):
        super().__init__(reason)
        self.reason = reason
        self.identity = identity


@dataclasses.dataclass(frozen=True)
class NormalizedAcademy:
    """One normalized academy: ``fields`` apply on create and update, ``defaults`` only on create."""

    name: str
    uuid: uuid.UUID | None
    fields: dict
    defaults: dict


# ---------------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------------

def extract_items(payload) -> list:
    """
    The list of academy items in ``payload``.

    - a list is the list of items (returned as is; non-dict entries are rejected later, one by one);
    - a dict whose ``results``, ``items``, ``academies`` or ``catalogs`` holds a list gives the first
      such list, in that order -- except ``catalogs`` in a dict that itself looks like an academy
      (has ``name``/``title``/``short_name``/``uuid``/``academy_uuid``): there it is the academy's list of
      catalogs (searched for the catalog query), so the dict is a single academy;
    - a dict that looks like an academy gives ``[payload]``;
    - anything else gives ``[]``.
    """
    if isinstance(payload, list):
        return payload
    if not isinstance(payload, dict):
        return []
    looks_like_academy = any(key in payload for key in _NAME_KEYS + _UUID_KEYS)
    for key in _ENVELOPE_KEYS:
        if key == "catalogs" and looks_like_academy:
            continue
        if isinstance(payload.get(key), list):
            return payload[key]
    return [payload] if looks_like_academy else []


def parse_uuid(value) -> uuid.UUID | None:
    """
    ``value`` as a UUID, or None.

    Accepted: ``uuid.UUID`` objects; strings of 32 hex digits in any case, either plain or in the
    canonical 8-4-4-4-12 hyphenated form, optionally wrapped in ``{...}`` or prefixed with ``urn:uuid:``,
    surrounding whitespace ignored. Everything else is None: ints (legacy numeric ids), bools, floats,
    other strings (including the ``0x``/underscore forms ``uuid.UUID()`` itself would swallow), None.
    """
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 100:
        return None
    return _parse_uuid_text(value)


@functools.lru_cache(maxsize=8192)  # a stream repeats its academies' uuids (a UUID is immutable: shared safely)
def _parse_uuid_text(value):
    """The UUID a text spells (bare, braced or ``urn:uuid:``), or None."""
    text = value.strip()
    if text[:9].lower() == "urn:uuid:":
        text = text[9:]
    elif text[:1] == "{" and text[-1:] == "}":
        text = text[1:-1]
    if not _UUID_RE.fullmatch(text):
        return None
    return uuid.UUID(text)


def find_catalog_query_uuid(item) -> uuid.UUID | None:
    """
    The first valid catalog query UUID in ``item``, or None.

    Searched in order: ``catalog_query_uuid``, ``catalog_query``, ``enterprise_catalog_query``, then the
    ``catalogs`` and ``enterprise_catalogs`` lists. Lists are searched element by element; dicts by their
    keys ``catalog_query_uuid``, ``catalog_query``, ``enterprise_catalog_query``, then ``uuid`` (the more
    specific key first, so a catalog ``{"uuid": <catalog>, "catalog_query_uuid": <query>}`` gives the
    query). Values :func:`parse_uuid` refuses are skipped. The search stops at nesting depth 20 and
    after 10,000 values, so hostile or cyclic structures cannot crash it.
    """
    if not isinstance(item, dict):
        return None
    budget = [MAX_SEARCH_NODES]
    for key in _QUERY_KEYS:
        found = _search_uuid(item.get(key), 1, budget)
        if found is not None:
            return found
    return None


def _search_uuid(value, depth, budget):
    """The first uuid in a catalog query value (nested dicts and lists), within MAX_SEARCH_DEPTH and a node budget."""
    if depth > MAX_SEARCH_DEPTH or budget[0] <= 0:
        return None
    budget[0] -= 1
    if isinstance(value, dict):
        children = (value.get(key) for key in _NESTED_QUERY_KEYS)
    elif isinstance(value, list):
        children = value
    else:
        return parse_uuid(value)
    for child in children:
        found = _search_uuid(child, depth + 1, budget)
        if found is not None or budget[0] <= 0:
            return found
    return None


def ascii_fold(text) -> str:
    """
    ``text`` transliterated to ASCII: NFKD, then text-unidecode's table (unpaired surrogates become spaces).

    The one transliteration of the slug and lookup key rules. It is done here, with text-unidecode (a
    dependency of python-slugify itself, so present in every host), and not left to python-slugify, which
    uses Unidecode instead when that is installed: the two tables differ for some 24,000 characters, so the
    same name would get another slug and lookup key in a host that has Unidecode. Folded first, the text is
    ASCII, which both tables leave as it is (``tests/test_normalize.py`` checks the equality).
    """
    return unidecode(unicodedata.normalize("NFKD", _SURROGATES_RE.sub(" ", text)))


def lookup_token(text) -> str:
    """
    ASCII-folded (:func:`ascii_fold`), lowercased, non-``[a-z0-9]`` runs to ``_``, ends trimmed; ``""`` for a
    non-string.
    """
    if not isinstance(text, str):
        return ""
    return _TOKEN_SEPARATORS_RE.sub("_", ascii_fold(text).lower()).strip("_")


def default_lookup_key(product_key, name, fallback) -> str:
    """
    ``essentials_<token>_academy_yearly``.

    ``<token>`` is the lookup token of ``product_key`` when it is a non-blank string, else of ``name``,
    with one trailing ``_academy`` removed (``data_academy`` -> ``data``; a bare ``academy`` stays). An
    empty token becomes ``academy_<token of fallback>``. The token is cut so the key fits 255 characters.
    """
    if not isinstance(product_key, str):
        product_key = None  # (only a string is used: keeps the cache's key hashable)
    return _default_lookup_key(product_key, name if isinstance(name, str) else None, _fallback_key(fallback))


@functools.lru_cache(maxsize=8192)  # a stream repeats its academies: the folding and the regexes once per name
def _default_lookup_key(product_key, name, fallback):
    """The Stripe price lookup key made from the product key or the name (``fallback`` when both are empty)."""
    source = product_key if product_key is not None and product_key.strip() else name
    token = lookup_token(source)
    if token.endswith("_academy"):
        token = token[: -len("_academy")]
    if not token:
        token = f"academy_{lookup_token(str(fallback) if fallback else '')}".rstrip("_")
    room = MAX_KEY_LENGTH - len(_LOOKUP_PREFIX) - len(_LOOKUP_SUFFIX)
    return f"{_LOOKUP_PREFIX}{token[:room].rstrip('_')}{_LOOKUP_SUFFIX}"


def default_slug(name, fallback) -> str:
    """
    python-slugify of ``name`` folded to ASCII by :func:`ascii_fold` (at most 255 characters, cut at a word
    boundary).

    When that is empty (a name of only symbols), ``academy-<fallback>`` slugified, where ``fallback`` is
    the academy uuid or a stable hash of the name; ``academy`` if even that is empty. Never empty.
    """
    return _default_slug(name if isinstance(name, str) else None, _fallback_key(fallback))


def _fallback_key(fallback):
    """``fallback`` as a cache key: a UUID or a non-empty string as it is (str() inside the cached function)."""
    if isinstance(fallback, uuid.UUID):
        return fallback
    return str(fallback) if fallback else None


@functools.lru_cache(maxsize=8192)  # python-slugify costs more than the rest of a normalization
def _default_slug(name, fallback):
    """The slug made from the name (from ``fallback`` when the name gives none)."""
    slug = slugify(ascii_fold(name), max_length=MAX_KEY_LENGTH, word_boundary=True) if name is not None else ""
    if not slug:
        slug = slugify(f"academy-{fallback or ''}", max_length=MAX_KEY_LENGTH, word_boundary=True)
    return slug or "academy"


def is_valid_slug(value) -> bool:
    """True for a string matching Django's ``validate_slug`` (``^[-a-zA-Z0-9_]+\\Z``) of at most 255 characters."""
    return isinstance(value, str) and len(value) <= MAX_KEY_LENGTH and bool(_SLUG_RE.fullmatch(value))


# ---------------------------------------------------------------------------------------------------
# The two shapes: a catalog item, an event's typed record
# ---------------------------------------------------------------------------------------------------

def normalize_academy(item) -> NormalizedAcademy:
    """Normalize one catalog item, in any of the catalog's shapes (module docstring); raises :class:`Rejected`."""
    if not isinstance(item, dict):
        raise Rejected("item is not a JSON object")
    uuid_key, uuid_value = _first_present(item, _UUID_KEYS)
    return _academy(
        _candidate_name(item), uuid_key, uuid_value, is_active=item.get("is_active"),
        query_uuid=find_catalog_query_uuid(item), slug=item.get("slug"),
        lookup_key=item.get("stripe_price_lookup_key"), product_key=item.get("product_key"),
        product_id=item.get("stripe_product_id"), display_order=item.get("display_order"),
        texts=tuple(_catalog_text(item, keys) for keys in _CATALOG_TEXT_KEYS), tags=_catalog_tags(item.get("tags")))


def normalize_event(record) -> NormalizedAcademy:
    """
    Normalize the typed record of an academy event (``AcademyData``'s fields: module docstring), field by
    field; raises :class:`Rejected`. The values have the types of the event schema (text, whole numbers,
    booleans, a list of texts); this function reads no other shape.
    """
    get = record.get
    title, academy_uuid, tags = get("title"), get("uuid"), get("tags")
    return _academy(
        (" ".join(title.split()) or None) if title is not None else None,
        "uuid" if academy_uuid is not None else None, academy_uuid, is_active=get("is_active"),
        query_uuid=parse_uuid(get("catalog_query_uuid")), slug=get("slug"),
        lookup_key=get("stripe_price_lookup_key"), product_key=get("product_key"),
        product_id=get("stripe_product_id"), display_order=get("display_order"),
        texts=(_stripped(get("short_description")), _stripped(get("long_description")), _stripped(get("image"))),
        tags=None if tags is None else [tag.strip() for tag in tags])


def _stripped(text):
    """A text field of an event record, stripped (``None``: not carried)."""
    return None if text is None else text.strip()


def _candidate_name(item):
    """First non-empty of name/title/short_name as text, whitespace collapsed; None if none. Not validated."""
    for key in _NAME_KEYS:
        text = _text(item.get(key))
        if text:
            collapsed = " ".join(text.split())
            if collapsed:
                return collapsed
    return None


def _catalog_text(item, keys):
    """
    The first non-empty text among ``keys`` (stripped); ``""`` if the only present ones are empty; None if all
    are absent/None. A present value that is not text gives the :class:`Rejected` to raise (not raised here:
    the value rules raise it in their turn). An ``image`` may be a dict with ``url``/``src``; other dicts are
    rich text (``rendered``, then ``raw``).
    """
    found = None
    for key in keys:
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            text = value.strip()
        else:
            text = _text(value, ("url", "src") if key == "image" else ("rendered", "raw"))
        if text is None:
            return Rejected(f"{key} is not text, got {_preview(value)}")
        found = text
        if text:
            break
    return found


def _catalog_tags(value):
    """
    The titles of a catalog ``tags`` list (strings, or dicts with a ``title``; other entries give None), None
    when absent, or the :class:`Rejected` of a value that is no list (raised by the value rules in their turn).
    """
    if value is None:
        return None
    if not isinstance(value, list):
        return Rejected(f"tags must be a list, got {_preview(value)}")
    return (entry.strip() if isinstance(entry, str) else _text(entry.get("title")) if isinstance(entry, dict)
            else None for entry in value)


# ---------------------------------------------------------------------------------------------------
# The value rules, one set for both shapes
# ---------------------------------------------------------------------------------------------------

def _academy(name, uuid_key, uuid_value, *, is_active, query_uuid, slug, lookup_key, product_key, product_id,
             display_order, texts, tags):
    """
    The value rules, in order, over the values a shape found: ``name`` is the candidate name (whitespace
    collapsed, not validated; None: missing), ``uuid_key`` the key the uuid came from (None: absent),
    ``query_uuid`` the catalog query uuid found (or None), ``texts`` the description, long description and
    image texts (stripped; None: absent; or a shape's :class:`Rejected`), ``tags`` the tag titles (or None,
    or a :class:`Rejected`); the others are the payload's values as carried (None: absent).
    """
    # (Written out rather than looped over: this runs for every event, and loops cost a third of it.)
    try:
        name = _name(name)
        academy_uuid = _academy_uuid(uuid_key, uuid_value)
        fallback = academy_uuid if academy_uuid is not None else _name_hash(name)  # (a UUID: str() in the caches)
        fields = {"name": name, "is_active": _is_active(is_active)}
        defaults = {}
        if academy_uuid is not None:
            fields["uuid"] = academy_uuid
        if query_uuid is not None:
            fields["catalog_query_uuid"] = query_uuid
        value, carried = _slug(slug, name, fallback)
        (fields if carried else defaults)["slug"] = value
        value, carried = _lookup_key(lookup_key, product_key, name, fallback)
        (fields if carried else defaults)["stripe_price_lookup_key"] = value
        value, carried = _product_id(product_id)
        (fields if carried else defaults)["stripe_product_id"] = value
        value, carried = _display_order(display_order)
        (fields if carried else defaults)["display_order"] = value
        for field, text, limit in zip(_TEXT_FIELDS, texts, _TEXT_LIMITS):
            if text is not None:
                fields[field] = _text_field(field, text, limit)
        if tags is not None:
            fields["tags"] = _tags(tags)
    except Rejected as exc:
        raise Rejected(exc.reason, _identity(uuid_value, name)) from None
    return NormalizedAcademy(name=name, uuid=academy_uuid, fields=fields, defaults=defaults)


def _identity(uuid_value, name):
    """The uuid string if the payload's uuid is valid, else the (collapsed, cut) name, else None."""
    parsed = parse_uuid(uuid_value)
    if parsed is not None:
        return str(parsed)
    return name[:MAX_NAME_LENGTH] if name else None


def _name(name):
    """The validated name: present, <= 255 characters, no control characters."""
    if name is None:
        raise Rejected("missing name")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(f"name is too long ({len(name)} characters, at most {MAX_NAME_LENGTH})")
    if _BAD_IN_LINE_RE.search(name):
        raise Rejected(f"name {_preview(name)} contains a control character or an unpaired surrogate")
    return name


def _academy_uuid(key, value):
    """The academy uuid carried under ``key`` as a UUID; None when absent (``key`` None)."""
    if key is None:
        return None
    parsed = parse_uuid(value)
    if parsed is None:
        raise Rejected(f"invalid uuid {_preview(value)} in {key}")
    return parsed


def _name_hash(name):
    """Stable 12-hex-digit fallback for a slug or lookup key when the academy has no uuid."""
    return hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


def _slug(value, name, fallback):
    """(slug, carried): a valid payload slug, else the default; carried unless the payload slug is absent/blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_slug(name, fallback), False
    if isinstance(value, str) and is_valid_slug(value.strip()):
        return value.strip(), True
    return default_slug(name, fallback), True


def _lookup_key(value, product_key, name, fallback):
    """(key, carried): the payload stripe_price_lookup_key, else the default built from product_key/name."""
    if value is None:
        if isinstance(product_key, str):
            _check_line("product_key", product_key, MAX_KEY_LENGTH)
        return default_lookup_key(product_key, name, fallback), False
    if not isinstance(value, str) or not value.strip():
        raise Rejected(f"stripe_price_lookup_key must be a non-empty string, got {_preview(value)}")
    return _check_line("stripe_price_lookup_key", value.strip(), MAX_KEY_LENGTH), True


def _product_id(value):
    """(id, carried): the payload stripe_product_id string (may be empty), else "" for new rows."""
    if value is None:
        return "", False
    if not isinstance(value, str):
        raise Rejected(f"stripe_product_id must be a string, got {_preview(value)}")
    return _check_line("stripe_product_id", value.strip(), MAX_KEY_LENGTH), True


def _display_order(value):
    """
    (order, carried): a whole number 0..2**31-1 from an int, a whole float (``2.0``) or an integer-looking
    string (optional sign and ASCII digits, surrounding whitespace ignored; ``"2.0"`` is text, not a number).
    """
    if value is None:
        return 0, False
    if type(value) is int and 0 <= value <= MAX_DISPLAY_ORDER:  # pylint: disable=unidiomatic-typecheck
        return value, True  # (the usual case; ``bool`` is a subclass of int, not this type)
    problem = f"display_order must be a whole number >= 0, got {_preview(value)}"
    if isinstance(value, bool):
        raise Rejected(problem)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INT_RE.fullmatch(value.strip()) and len(value.strip()) <= 20:
        number = int(value.strip())
    else:
        raise Rejected(problem)
    if number < 0:
        raise Rejected(f"display_order must not be negative, got {_preview(value)}")
    if number > MAX_DISPLAY_ORDER:
        raise Rejected(f"display_order is too large (at most {MAX_DISPLAY_ORDER}), got {_preview(value)}")
    return number, True


def _is_active(value):
    """A bool or "true"/"false" (any case, stripped); absent/None is True."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Rejected(f"is_active must be true or false, got {_preview(value)}")


def _text_field(field, text, limit):
    """
    A stripped text (or the shape's :class:`Rejected`, raised here): at most ``limit`` characters, no control
    character but tab, newline and carriage return.
    """
    if isinstance(text, Rejected):
        raise text
    if len(text) > limit:
        raise Rejected(f"{field} is too long ({len(text)} characters, at most {limit})")
    if _BAD_IN_TEXT_RE.search(text):
        raise Rejected(f"{field} contains a control character or an unpaired surrogate")
    return text


def _tags(titles):
    """The stripped tag titles (or the shape's :class:`Rejected`, raised here): in order, duplicates and empty
    ones dropped, at most ``MAX_TAGS``, each a line of at most 255 characters."""
    if isinstance(titles, Rejected):
        raise titles
    kept, seen = [], set()
    for title in titles:
        if title and title not in seen:
            if len(kept) == MAX_TAGS:
                raise Rejected(f"tags has more than {MAX_TAGS} distinct titles")
            seen.add(title)
            kept.append(_check_line("tag title", title, MAX_NAME_LENGTH))
    return kept


# ---------------------------------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------------------------------

def _first_present(item, keys):
    """(key, value) of the first key whose value is not None, else (None, None)."""
    for key in keys:
        if item.get(key) is not None:
            return key, item[key]
    return None, None


def _text(value, dict_keys=("rendered", "raw")):
    """
    Stripped text of a scalar or a dict, or None when unusable.

    Strings are stripped; ints, floats and Decimals (bools included) go through ``str()``; a dict gives the
    first non-empty of its ``dict_keys`` (``""`` if those are only empty); lists, None and anything else
    (including an int too large for ``str()``) are unusable.
    """
    if isinstance(value, dict):
        texts = [text for text in (_scalar_text(value.get(key)) for key in dict_keys) if text is not None]
        return next((text for text in texts if text), texts[0] if texts else None)
    return _scalar_text(value)


def _scalar_text(value):
    """A string or a number as stripped text; anything else is None."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float, decimal.Decimal)):
        try:
            return str(value).strip()
        except ValueError:  # an int beyond sys.get_int_max_str_digits()
            return None
    return None


def _check_line(field, value, limit):
    """``value`` if it fits ``limit`` and holds no control character; else rejected."""
    if len(value) > limit:
        raise Rejected(f"{field} is too long ({len(value)} characters, at most {limit})")
    if _BAD_IN_LINE_RE.search(value):
        raise Rejected(f"{field} {_preview(value)} contains a control character or an unpaired surrogate")
    return value


def _preview(value, limit=40):
    """A short one-line description of ``value`` for a rejection reason."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large integer"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"a value of type {type(value).__name__}"
