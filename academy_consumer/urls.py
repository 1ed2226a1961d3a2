"""URLs for running academy-consumer on its own: only the Django admin."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
