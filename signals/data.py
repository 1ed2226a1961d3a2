"""
Data attributes for the Enterprise Catalog academy events (architecture subdomain ``enterprise``).

These attributes follow the form of attr objects specified in OEP-49 data pattern, and are limited to
what openedx-events' Avro tooling (``openedx_events.event_bus.avro``) can serialize:

* ``uuid`` / ``catalog_query_uuid`` are ``UUID``: the tooling ships a UUID serializer (an Avro ``string``
  on the wire), so producers and consumers share a parsed, validated value.
* A field with ``default=None`` becomes an Avro union ``["null", <type>]`` with default ``null``
  (openedx-events ADR 7), which is what makes it optional and lets it be added later compatibly.
* ``tags`` is a ``List[str]`` of tag titles: the tooling only supports lists of simple types
  (``bool``, ``int``, ``float``, ``bytes``, ``str``), not lists of attrs records (the catalog's tag
  objects, ``{"id", "title", "description"}``, are reduced to their titles by ``academy_data_from_dict``).
"""
from typing import List
from uuid import UUID

import attr

_AVRO_LONG_MIN, _AVRO_LONG_MAX = -(2 ** 63), 2 ** 63 - 1


@attr.s(frozen=True)
class AcademyData:
    """
    An Enterprise Catalog academy, with the optional billing fields some sources carry.

    Attributes:
        uuid (UUID): the catalog's academy uuid (the event key).
        title (str): academy title.
        short_description (str): short description (optional).
        long_description (str): long description (optional).
        image (str): URL of the academy card image (optional).
        tags (List[str]): titles of the academy's tags; empty when it has none.
        slug (str): billing slug (optional).
        product_key (str): billing product key (optional).
        stripe_product_id (str): Stripe product id (optional).
        stripe_price_lookup_key (str): Stripe price lookup key (optional).
        display_order (int): display order, >= 0 (optional).
        is_active (bool): whether the academy is sold; absent means active (optional).
        catalog_query_uuid (UUID): uuid of the enterprise catalog query behind the academy (optional).
    """

    uuid = attr.ib(type=UUID)
    title = attr.ib(type=str)
    short_description = attr.ib(type=str, default=None)
    long_description = attr.ib(type=str, default=None)
    image = attr.ib(type=str, default=None)
    tags = attr.ib(type=List[str], factory=list)
    slug = attr.ib(type=str, default=None)
    product_key = attr.ib(type=str, default=None)
    stripe_product_id = attr.ib(type=str, default=None)
    stripe_price_lookup_key = attr.ib(type=str, default=None)
    display_order = attr.ib(type=int, default=None)
    is_active = attr.ib(type=bool, default=None)
    catalog_query_uuid = attr.ib(type=UUID, default=None)


def academy_data_from_dict(item: dict) -> AcademyData:
    """
    Build an ``AcademyData`` from a catalog academy dict (the shape of the catalog REST API's results).

    Only the keys ``AcademyData`` defines are read; other keys are ignored. A key that is absent or
    ``None`` leaves an optional field at ``None`` (``tags``: empty). Values are checked, not coerced,
    except that uuid fields accept ``UUID`` objects or UUID strings. ``tags`` items may be strings or
    dicts with a string ``title`` (the catalog's ``{"id", "title", "description"}``).

    Raises:
        TypeError: ``item`` is not a dict, or a value has a type the Avro encoding cannot carry
            (e.g. a number for ``title``, a string or bool for ``display_order``).
        ValueError: ``uuid`` or ``title`` is missing, a uuid does not parse, or an integer is out of
            the Avro ``long`` range.
    """
    if not isinstance(item, dict):
        raise TypeError(f"academy must be a dict, got {type(item).__name__}")
    values = {}
    for field in attr.fields(AcademyData):
        value = item.get(field.name)
        if field.name == "tags":
            values["tags"] = _tag_titles(value)
        elif value is not None:
            values[field.name] = _check_value(field.name, field.type, value)
        elif field.default is attr.NOTHING:
            raise ValueError(f"academy {field.name!r} is required")
    return AcademyData(**values)


def academy_data_to_dict(data: AcademyData) -> dict:
    """
    Turn an ``AcademyData`` back into a plain catalog-shaped dict.

    ``None`` fields are omitted (absent means "not carried", which the normalizer treats as "keep"),
    uuids become strings and ``tags`` stays a list of titles.
    """
    return {
        name: str(value) if isinstance(value, UUID) else value
        for name, value in attr.asdict(data).items()
        if value is not None
    }


def _check_value(name, expected_type, value):
    """Return ``value`` (parsed, for a UUID field) if it fits ``expected_type``, else raise."""
    if expected_type is UUID:
        if isinstance(value, UUID):
            return value
        if not isinstance(value, str):
            raise TypeError(f"academy {name!r} must be a UUID string, got {type(value).__name__}")
        try:
            return UUID(value)
        except ValueError:
            raise ValueError(f"academy {name!r} is not a valid UUID: {value!r}") from None
    # bool is a subclass of int: an int field refuses it, and a bool field refuses 0/1.
    if not isinstance(value, expected_type) or (expected_type is int and isinstance(value, bool)):
        raise TypeError(f"academy {name!r} must be {expected_type.__name__}, got {type(value).__name__}")
    if expected_type is int and not _AVRO_LONG_MIN <= value <= _AVRO_LONG_MAX:
        raise ValueError(f"academy {name!r} does not fit an Avro long: {value}")
    return value


def _tag_titles(tags) -> List[str]:
    """Titles of ``tags`` (a list of strings and/or dicts with a string ``title``); ``None`` -> []."""
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise TypeError(f"academy 'tags' must be a list, got {type(tags).__name__}")
    titles = []
    for tag in tags:
        title = tag.get("title") if isinstance(tag, dict) else tag
        if not isinstance(title, str):
            raise TypeError(f"academy tag must be a string or a dict with a string 'title', got {tag!r}")
        titles.append(title)
    return titles
