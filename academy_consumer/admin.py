"""Read-mostly admin for the academy table: the catalog owns the data, this service mirrors it."""

from django.contrib import admin

from academy_consumer.models import EnterpriseAcademy


@admin.register(EnterpriseAcademy)
class EnterpriseAcademyAdmin(admin.ModelAdmin):
    list_display = ("name", "uuid", "slug", "stripe_price_lookup_key", "display_order", "is_active", "modified")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "uuid", "stripe_price_lookup_key", "stripe_product_id")
    readonly_fields = ("uuid", "name_key", "source_timestamp", "created", "modified")
    ordering = ("display_order", "name_key")
