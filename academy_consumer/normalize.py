"""
Normalization of academy payloads: pure functions, no Django, no Kafka.

``normalize_academy(item)`` turns one item from any source (catalog REST API, event bus, fixtures,
hand-written files) into a :class:`NormalizedAcademy`, or raises :class:`Rejected` with a one-line
reason. ``fields`` holds what the payload carries (applied on create and on update); ``defaults``
holds values used only when a row is created (on update an absent field keeps its stored value).
The two dicts never share a key.

Rules, one function each:

- item: must be a dict, else rejected ("item is not a JSON object").
- name (``_name``): first non-empty of ``name``, ``title``, ``short_name``; a string, a rich-text dict
  (``rendered`` preferred, then ``raw``) or another scalar via ``str()``; stripped, inner whitespace runs
  collapsed. Missing, longer than 255 characters, or containing a control character (or an unpaired
  surrogate) -> rejected. Always in ``fields``.
- uuid (``_academy_uuid``): first non-None of ``uuid``, ``academy_uuid``, parsed by :func:`parse_uuid`.
  Absent/None -> no uuid; anything else unparseable (an int, a bool, ``""``, junk) -> rejected.
- catalog_query_uuid (:func:`find_catalog_query_uuid`): first valid UUID found in ``catalog_query_uuid``,
  ``catalog_query``, ``enterprise_catalog_query``, ``catalogs``, ``enterprise_catalogs``, recursing into
  lists and dicts. Invalid values are ignored; nothing found -> key absent (keep the stored value).
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
- is_active (``_is_active``): a bool or "true"/"false" -> ``fields``; absent/None -> True (always in
  ``fields``: a listed or announced academy is live); anything else -> rejected.
- description / long_description / thumbnail_url (``_text_field``): from ``short_description`` then
  ``description``; ``long_description``; ``image`` (a string or a dict with ``url``/``src``) then
  ``thumbnail_url``. Present -> ``fields`` (stripped, may be empty); too long, not text, or holding a
  control character other than tab/newline/CR -> rejected.
- tags (``_tags``): a list of strings or ``{"title": ...}`` dicts -> ``fields`` (stripped titles, order
  kept, duplicates and unusable entries dropped); not a list, more than 1,000 distinct titles, or a title
  over 255 characters or with a control character -> rejected; absent/None -> not in ``fields``.
- envelope (:func:`extract_items`): see its docstring.

Uniqueness of slug and lookup key across rows is the apply layer's job (``apply.py``), not this module's.
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
_TEXT_FIELDS = (  # field, payload keys in order, longest text
    ("description", ("short_description", "description"), MAX_TEXT_LENGTH),
    ("long_description", ("long_description",), MAX_TEXT_LENGTH),
    ("thumbnail_url", ("image", "thumbnail_url"), MAX_URL_LENGTH),
)
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
# normalize_academy and its rules
# ---------------------------------------------------------------------------------------------------

def normalize_academy(item) -> NormalizedAcademy:
    """Normalize one academy item (see the module docstring for the rules); raises :class:`Rejected`."""
    if not isinstance(item, dict):
        raise Rejected("item is not a JSON object")
    try:
        return _normalize(item)
    except Rejected as exc:
        raise Rejected(exc.reason, _identity(item)) from None


def _normalize(item):
    """One catalog item -> ``NormalizedAcademy``; raises ``Rejected`` at the first rule it breaks."""
    # (The rules one after the other, in this order, which is also the order a rejection is found in. Written
    # out rather than looped over: this runs for every event, and the loops cost a third of it.)
    name = _name(item)
    academy_uuid = _academy_uuid(item)
    fallback = academy_uuid if academy_uuid is not None else _name_hash(name)  # (a UUID: str() in the caches)
    fields = {"name": name, "is_active": _is_active(item)}
    defaults = {}
    if academy_uuid is not None:
        fields["uuid"] = academy_uuid
    query_uuid = find_catalog_query_uuid(item)
    if query_uuid is not None:
        fields["catalog_query_uuid"] = query_uuid
    value, carried = _slug(item, name, fallback)
    (fields if carried else defaults)["slug"] = value
    value, carried = _lookup_key(item, name, fallback)
    (fields if carried else defaults)["stripe_price_lookup_key"] = value
    value, carried = _product_id(item)
    (fields if carried else defaults)["stripe_product_id"] = value
    value, carried = _display_order(item)
    (fields if carried else defaults)["display_order"] = value
    for field, keys, limit in _TEXT_FIELDS:
        text = _text_field(item, field, keys, limit)
        if text is not None:
            fields[field] = text
    tags = _tags(item)
    if tags is not None:
        fields["tags"] = tags
    return NormalizedAcademy(name=name, uuid=academy_uuid, fields=fields, defaults=defaults)


def _identity(item):
    """The uuid string if the payload's uuid is valid, else the (collapsed, cut) name, else None."""
    parsed = parse_uuid(_first_present(item, _UUID_KEYS)[1])
    if parsed is not None:
        return str(parsed)
    name = _candidate_name(item)
    return name[:MAX_NAME_LENGTH] if name else None


def _candidate_name(item):
    """First non-empty of name/title/short_name as text, whitespace collapsed; None if none. Not validated."""
    for key in _NAME_KEYS:
        text = _text(item.get(key))
        if text:
            collapsed = " ".join(text.split())
            if collapsed:
                return collapsed
    return None


def _name(item):
    """The validated name: present, <= 255 characters, no control characters."""
    name = _candidate_name(item)
    if name is None:
        raise Rejected("missing name")
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected(f"name is too long ({len(name)} characters, at most {MAX_NAME_LENGTH})")
    if _BAD_IN_LINE_RE.search(name):
        raise Rejected(f"name {_preview(name)} contains a control character or an unpaired surrogate")
    return name


def _academy_uuid(item):
    """The first non-None of uuid/academy_uuid as a UUID; None when both are absent/None."""
    key, value = _first_present(item, _UUID_KEYS)
    if key is None:
        return None
    parsed = parse_uuid(value)
    if parsed is None:
        raise Rejected(f"invalid uuid {_preview(value)} in {key}")
    return parsed


def _name_hash(name):
    """Stable 12-hex-digit fallback for a slug or lookup key when the academy has no uuid."""
    return hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


def _slug(item, name, fallback):
    """(slug, carried): a valid payload slug, else the default; carried unless the payload slug is absent/blank."""
    value = item.get("slug")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_slug(name, fallback), False
    if isinstance(value, str) and is_valid_slug(value.strip()):
        return value.strip(), True
    return default_slug(name, fallback), True


def _lookup_key(item, name, fallback):
    """(key, carried): the payload stripe_price_lookup_key, else the default built from product_key/name."""
    value = item.get("stripe_price_lookup_key")
    if value is None:
        product_key = item.get("product_key")
        if isinstance(product_key, str):
            _check_line("product_key", product_key, MAX_KEY_LENGTH)
        return default_lookup_key(product_key, name, fallback), False
    if not isinstance(value, str) or not value.strip():
        raise Rejected(f"stripe_price_lookup_key must be a non-empty string, got {_preview(value)}")
    return _check_line("stripe_price_lookup_key", value.strip(), MAX_KEY_LENGTH), True


def _product_id(item):
    """(id, carried): the payload stripe_product_id string (may be empty), else "" for new rows."""
    value = item.get("stripe_product_id")
    if value is None:
        return "", False
    if not isinstance(value, str):
        raise Rejected(f"stripe_product_id must be a string, got {_preview(value)}")
    return _check_line("stripe_product_id", value.strip(), MAX_KEY_LENGTH), True


def _display_order(item):
    """
    (order, carried): a whole number 0..2**31-1 from an int, a whole float (``2.0``) or an integer-looking
    string (optional sign and ASCII digits, surrounding whitespace ignored; ``"2.0"`` is text, not a number).
    """
    value = item.get("display_order")
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


def _is_active(item):
    """A bool or "true"/"false" (any case, stripped); absent/None is True."""
    value = item.get("is_active")
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Rejected(f"is_active must be true or false, got {_preview(value)}")


def _text_field(item, field, keys, limit):
    """
    The first non-empty text among ``keys`` (stripped); ``""`` if the only present ones are empty; None if
    all are absent/None. A present value that is not text rejects the item, as do an over-long text and a
    control character other than tab, newline and carriage return. An ``image`` may be a dict with
    ``url``/``src``; other dicts are rich text (``rendered``, then ``raw``).
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
            raise Rejected(f"{key} is not text, got {_preview(value)}")
        found = text
        if text:
            break
    if found is None:
        return None
    if len(found) > limit:
        raise Rejected(f"{field} is too long ({len(found)} characters, at most {limit})")
    if _BAD_IN_TEXT_RE.search(found):
        raise Rejected(f"{field} contains a control character or an unpaired surrogate")
    return found


def _tags(item):
    """Stripped tag titles from a list of strings or {"title"} dicts, in order, without duplicates."""
    value = item.get("tags")
    if value is None:
        return None
    if not isinstance(value, list):
        raise Rejected(f"tags must be a list, got {_preview(value)}")
    titles, seen = [], set()
    for entry in value:
        if isinstance(entry, str):
            title = entry.strip()
        elif isinstance(entry, dict):
            title = _text(entry.get("title"))
        else:
            continue
        if title and title not in seen:
            if len(titles) == MAX_TAGS:
                raise Rejected(f"tags has more than {MAX_TAGS} distinct titles")
            seen.add(title)
            titles.append(_check_line("tag title", title, MAX_NAME_LENGTH))
    return titles


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
