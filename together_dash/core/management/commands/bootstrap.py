"""Make an install ready to start: roles, the first admin login, the upstream key from the environment, and
an empty folder for the web processes' Prometheus series."""
from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from together_dash.core import metrics_dir
from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP
from together_dash.keys.models import TogetherKey
from together_dash.pollers.schedule import sync_periodic_tasks

# The simulator accepts any key; this is not a real secret.
DEMO_UPSTREAM_SECRET = "sim-demo-upstream-key-0000"  # noqa: S105


class Command(BaseCommand):
    help = "Create the roles, the first admin login and the upstream key named by TOGETHER_API_KEY."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            for name in (VIEWER_GROUP, KEY_ADMIN_GROUP):
                Group.objects.get_or_create(name=name)
            self._ensure_admin()
            self._ensure_upstream_key()
            self._ensure_schedule()
        self._clear_metrics_dir()

    def _ensure_admin(self) -> None:
        User = get_user_model()
        username = os.environ.get("DASH_ADMIN_USERNAME", "admin")
        password = os.environ.get("DASH_ADMIN_PASSWORD", "")
        user = User.objects.filter(username=username).first()
        if user is None:
            generated = not password
            password = password or secrets.token_urlsafe(12)
            email = os.environ.get("DASH_ADMIN_EMAIL", "")
            user = User.objects.create_superuser(username=username, email=email, password=password)
            if generated:
                # Printed exactly once, when the login is created; it is not stored anywhere in clear.
                self.stdout.write(self.style.WARNING(
                    f"Created admin login: username {username!r} password {password!r} "
                    "(shown once; change it in the admin)."
                ))
            else:
                self.stdout.write(
                    f"Created admin login {username!r} from DASH_ADMIN_USERNAME/DASH_ADMIN_PASSWORD."
                )
        elif password and not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"Updated the password of {username!r} from DASH_ADMIN_PASSWORD.")
        user.groups.add(*Group.objects.filter(name__in=[VIEWER_GROUP, KEY_ADMIN_GROUP]))

    def _ensure_upstream_key(self) -> None:
        if settings.TOGETHER_API_KEY:
            name, secret = "default", settings.TOGETHER_API_KEY
        elif settings.DEMO_MODE:
            name, secret = "demo", DEMO_UPSTREAM_SECRET
        else:
            return
        if not TogetherKey.objects.filter(name=name).exists():
            key = TogetherKey.create(name=name, secret=secret)
            self.stdout.write(f"Added upstream Together key {key}.")

    def _ensure_schedule(self) -> None:
        # Creates only the missing periodic tasks: intervals ops edited in the admin are kept.
        created = sync_periodic_tasks(demo=settings.DEMO_MODE)
        if created:
            self.stdout.write(f"Scheduled pollers: {', '.join(created)}.")

    def _clear_metrics_dir(self) -> None:
        # Run before the web processes start (make run does): files of an earlier run's processes would
        # otherwise pile up, one set per process id, and their old gauges would still be summed.
        removed = metrics_dir.clear(settings.METRICS_MULTIPROC_DIR)
        if removed:
            self.stdout.write(f"Cleared {removed} Prometheus series files of the previous run.")
