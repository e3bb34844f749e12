"""Django settings for the ORM suite: one database alias per CRM login,
all through pgveil (psycopg 3, Django's default binding)."""

import os

import workload

SECRET_KEY = "orm-suite"
USE_TZ = True
INSTALLED_APPS = ["crmapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(user):
    d = workload.dsn(user)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": d["dbname"],
        "USER": user,
        "PASSWORD": d["password"],
        "HOST": d["host"],
        "PORT": d["port"],
        "OPTIONS": {"server_side_binding": os.environ.get("DJANGO_SERVER_SIDE_BINDING") == "1"},
    }


DATABASES = {"default": database("crm_user")} | {user: database(user) for user in workload.crm.USERS}
