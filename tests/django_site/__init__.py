"""A small real Django project for tests/test_django_load.py (and for trying load by hand).

Served as ``tests.django_site.asgi:application``. Its SQLite database lives in the
directory named by ``DJANGO_SITE_DIR`` (a temp dir when unset); ``asgi.py`` creates
its one table on first use.
"""
