"""The local copy of the Enterprise Catalog's academies."""

from django.db import models


class ExactMatchMixin:
    """
    Make a text column compare byte for byte on every database.

    On MySQL/MariaDB the column gets a binary collation, so its unique index means "the same string"
    exactly as on PostgreSQL and SQLite (the default ``*_ci`` collations would also fold case, accents
    and trailing spaces). Used for the unique keys: the case-folded name, the slug and the lookup key.
    """

    def db_parameters(self, connection):
        params = super().db_parameters(connection)
        if connection.vendor == "mysql":
            params["collation"] = "utf8mb4_bin"
        return params


class ExactCharField(ExactMatchMixin, models.CharField):
    """A CharField compared byte for byte on every database."""


class ExactSlugField(ExactMatchMixin, models.SlugField):
    """A SlugField compared byte for byte on every database."""


class EnterpriseAcademy(models.Model):
    """
    An academy of the Enterprise Catalog, with the billing fields this service sells it by.

    Rows are never hard-deleted: an academy the catalog deletes or stops listing becomes inactive.

    .. no_pii: Catalog and billing data only (names, slugs, descriptions, Stripe ids, catalog query uuids,
       tags): no learner, user or customer contact data.
    """

    uuid = models.UUIDField(
        unique=True, null=True, blank=True,
        help_text="The catalog's academy uuid. Empty only for legacy rows created before the catalog had one.",
    )
    name = models.CharField(max_length=255, help_text="Display name; unique ignoring case.")
    name_key = ExactCharField(
        max_length=255, unique=True, editable=False,
        help_text="Case-folded name; its unique index enforces case-insensitive name uniqueness.",
    )
    slug = ExactSlugField(max_length=255, unique=True)
    catalog_query_uuid = models.UUIDField(null=True, blank=True)
    stripe_product_id = models.CharField(max_length=255, blank=True, default="")
    stripe_price_lookup_key = ExactCharField(max_length=255, unique=True)
    display_order = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    long_description = models.TextField(blank=True, default="")
    thumbnail_url = models.CharField(max_length=2048, blank=True, default="")
    tags = models.JSONField(default=list, blank=True, help_text="Tag titles, in catalog order.")
    source_timestamp = models.DateTimeField(
        null=True, blank=True,
        help_text="Time of the newest event or catalog snapshot applied to this row; older ones are stale.",
    )
    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_order", "name_key"]
        verbose_name = "enterprise academy"
        verbose_name_plural = "enterprise academies"

    def __str__(self):
        return f"{self.name} ({self.uuid or 'no uuid'})"

    def save(self, *args, **kwargs):
        self.name_key = name_key(self.name)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "name" in update_fields:
            kwargs["update_fields"] = set(update_fields) | {"name_key"}
        super().save(*args, **kwargs)


def name_key(name):
    """The key two academy names share when they differ only in case."""
    return (name or "").casefold()
