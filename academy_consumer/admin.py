"""
A read-only admin for the academy table: the catalog owns the data and this service mirrors it, so rows
are viewed, filtered and searched here, never added, edited or deleted (a hand edit would be overwritten
by the next event or reconcile; an academy the catalog drops is deactivated, never hard-deleted).

Without the add, change and delete permissions Django's admin shows every field read-only, with no save
buttons, no "add" link and no actions (the bulk delete action included), and answers 403 to a POST of
the change form and to the add and delete pages, for superusers too.
"""

from django.contrib import admin

from academy_consumer.models import EnterpriseAcademy


class _YesNoFilter(admin.SimpleListFilter):
    """A "yes / no" filter on whether ``field`` is set."""

    field = None

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            queryset = queryset.filter(**{f"{self.field}__isnull": self.value() == "no"})
        return queryset


class HasUuidFilter(_YesNoFilter):
    title, parameter_name, field = "has a catalog uuid", "has_uuid", "uuid"


class HasCatalogQueryFilter(_YesNoFilter):
    title, parameter_name, field = "has a catalog query", "has_catalog_query", "catalog_query_uuid"


class DisplayOrderFilter(admin.SimpleListFilter):
    """Display order in ranges."""

    title, parameter_name = "display order", "display_order_range"
    RANGES = {"0": (0, 0), "1-9": (1, 9), "10-99": (10, 99), "100+": (100, None)}

    def lookups(self, request, model_admin):
        return [(key, key) for key in self.RANGES]

    def queryset(self, request, queryset):
        if self.value() in self.RANGES:
            low, high = self.RANGES[self.value()]
            queryset = queryset.filter(display_order__gte=low)
            if high is not None:
                queryset = queryset.filter(display_order__lte=high)
        return queryset


@admin.register(EnterpriseAcademy)
class EnterpriseAcademyAdmin(admin.ModelAdmin):
    """The academies in the admin: searchable and filterable, never deleted."""
    list_display = ("name", "uuid", "slug", "stripe_price_lookup_key", "display_order", "is_active", "modified")
    list_filter = ("is_active", HasUuidFilter, HasCatalogQueryFilter, DisplayOrderFilter,
                   "created", "modified", "source_timestamp")
    search_fields = ("name", "slug", "uuid", "catalog_query_uuid", "stripe_price_lookup_key", "stripe_product_id")
    ordering = ("display_order", "name_key")
    actions = None  # not even the bulk delete

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
