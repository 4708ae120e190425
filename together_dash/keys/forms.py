"""Forms of the key pages. Secret fields never render their value back."""
from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from together_dash.keys.models import TogetherKey

MAX_GRACE_MINUTES = 7 * 24 * 60


def _secret_field(label: str) -> forms.CharField:
    # PasswordInput drops the value when a form is shown again with errors; strip=True trims pastes.
    return forms.CharField(
        label=label,
        max_length=512,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )


def _grace_field() -> forms.IntegerField:
    return forms.IntegerField(
        label="Grace window (minutes)",
        required=False,
        min_value=0,
        max_value=MAX_GRACE_MINUTES,
        help_text="Keep the old secret usable this long; empty or 0 ends it at once.",
    )


class GraceMixin:
    """Turns the grace_minutes field into a timedelta (None for no window)."""

    def grace(self) -> timedelta | None:
        minutes = self.cleaned_data.get("grace_minutes") or 0
        return timedelta(minutes=minutes) if minutes else None


class AddUpstreamKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    secret = _secret_field("Together API key")


class RotateUpstreamKeyForm(GraceMixin, forms.Form):
    secret = _secret_field("New Together API key")
    grace_minutes = _grace_field()


class RotateIssuedKeyForm(GraceMixin, forms.Form):
    grace_minutes = _grace_field()


class ConfirmRevokeForm(forms.Form):
    confirm = forms.BooleanField(
        required=True, label="I understand that revoking is immediate and cannot be undone."
    )


class CreateAppKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    upstream = forms.ModelChoiceField(
        queryset=TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE),
        required=False,
        empty_label="(default upstream key)",
        label="Upstream Together key",
    )
    allowed_models = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One model id per line or comma-separated; empty allows every model.",
    )
    rate_limit_per_minute = forms.IntegerField(required=False, min_value=1, label="Requests per minute")
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty for no expiry.",
    )

    def clean_expires_at(self) -> object:
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        models = [part.strip() for line in raw.splitlines() for part in line.split(",")]
        return list(dict.fromkeys(model for model in models if model))
