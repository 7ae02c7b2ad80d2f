from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("plain/", views.plain),
    path("db/", views.db),
    path("adb/", views.adb),
    path("echo/", views.echo),
    path("stream/", views.stream),
    path("sleep/", views.sleep),
    path("warm/", views.warm),
]
