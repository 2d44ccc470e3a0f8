"""Minimal settings: one app, no Django database, JSON views only.

The job system has its own connection, from DATABASE_URL; Django's ORM is
not used here, so DATABASES is empty.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "false").lower() == "true"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = ["emails.apps.EmailsConfig"]
# The views authenticate with a bearer token header, which browsers never
# attach on their own, so no session or CSRF middleware is needed.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgjobs": {"handlers": ["console"], "level": "INFO"}},
}
