"""Settings of the test Django project: SQLite in ``DJANGO_SITE_DIR``, no optional apps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SITE_DIR = Path(os.environ.get("DJANGO_SITE_DIR") or tempfile.mkdtemp(prefix="django-site-"))

DEBUG = False
SECRET_KEY = "django-site-for-tests-not-secret"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_site.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
]
# startproject's middleware: each runs its hooks through sync_to_async under ASGI.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(SITE_DIR / "db.sqlite3"),
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
# Django's errors (django.request) go to stderr, which the test servers send to their output.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django": {"handlers": ["console"], "level": "WARNING"},
        "tests.django_site": {"handlers": ["console"], "level": "INFO"},
    },
}
