"""``get_asgi_application()`` for the test project, as a project's own asgi.py has it."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_site.settings")

from django.core.asgi import get_asgi_application
from django.core.signals import request_finished, request_started
from django.db import connection

application = get_asgi_application()

from .views import log  # noqa: E402


def _started(**kwargs: object) -> None:
    log.info("request_started")


def _finished(**kwargs: object) -> None:
    log.info("request_finished")


# Every request_started must be followed by its request_finished (what closes the database
# connections): logged, so a test can count both.
request_started.connect(_started)
request_finished.connect(_finished)

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS site_item (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
    cursor.execute("SELECT count(*) FROM site_item")
    if cursor.fetchone()[0] == 0:
        cursor.executemany("INSERT INTO site_item (value) VALUES (%s)", [(i,) for i in range(100)])
connection.close()
