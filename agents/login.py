"""Sign-in throttling: after REVERIE_LOGIN_MAX_FAILURES wrong passwords for one username from one
client address (agents/proxies.py: X-Forwarded-For only from REVERIE_TRUSTED_PROXIES), that pair
is locked out for REVERIE_LOGIN_LOCKOUT_SECONDS with a clear message.

Counters live in Django's cache (Redis in production, so every web worker sees them). A lockout
blocks even the right password until it lapses; other addresses and other usernames are not
affected, so an attacker cannot lock a colleague out from elsewhere.
"""

import hashlib
import math
import time
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpResponse

from agents.proxies import client_address


def _key(kind: str, username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()[:32]
    return f"login:{kind}:{digest}"


def locked_for(*, username: str, address: str) -> int:
    """Seconds left of the lockout of (username, address); 0 when it may try."""
    until = cache.get(_key("lock", username, address))
    return max(0, math.ceil(until - time.time())) if until else 0


def record_failure(*, username: str, address: str) -> int:
    """Count a wrong password; the failure that reaches the limit starts the lockout."""
    window = settings.REVERIE_LOGIN_LOCKOUT_SECONDS
    key = _key("fail", username, address)
    if cache.add(key, 1, timeout=window):
        failures = 1
    else:
        try:
            failures = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            failures = 1
    if failures >= settings.REVERIE_LOGIN_MAX_FAILURES:
        cache.set(_key("lock", username, address), time.time() + window, timeout=window)
        cache.delete(key)
    return failures


def clear_failures(*, username: str, address: str) -> None:
    cache.delete(_key("fail", username, address))


def lockout_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        f"Too many failed sign-ins for this username from your address. Sign-in is locked for "
        f"{minutes} more minute{'s' if minutes != 1 else ''}; try again later or ask an admin "
        "to reset your password."
    )


class ThrottledLoginMixin:
    """For AuthenticationForm subclasses: refuse locked pairs, count wrong passwords."""

    locked_out = False
    locked_seconds = 0

    def clean(self) -> dict[str, Any]:
        username = self.data.get("username", "") or ""  # type: ignore[attr-defined]
        address = client_address(self.request)  # type: ignore[attr-defined]
        if username:
            seconds = locked_for(username=username, address=address)
            if seconds:
                self.locked_out, self.locked_seconds = True, seconds
                raise ValidationError(lockout_message(seconds), code="locked_out")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except ValidationError as error:
            if username and getattr(error, "code", None) == "invalid_login":
                record_failure(username=username, address=address)
                seconds = locked_for(username=username, address=address)
                if seconds:
                    self.locked_out, self.locked_seconds = True, seconds
                    raise ValidationError(lockout_message(seconds), code="locked_out") from error
            raise
        clear_failures(username=username, address=address)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    """The sign-in page: a locked-out attempt answers 429 with the lockout message."""

    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if getattr(form, "locked_out", False):
            response.status_code = 429
            response["Retry-After"] = str(form.locked_seconds)
        return response
