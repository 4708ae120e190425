"""Spend budgets: an amount in USD per UTC day or month, for one app key, upstream key, model or project."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from together_dash.keys.models import AppKey, TogetherKey

DEFAULT_THRESHOLDS = (80, 100)
MAX_THRESHOLD = 1000  # percent: a warning at ten times the budget is the most anyone needs


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


class Budget(models.Model):
    """What may be spent on one scope per period, when to warn, and whether the proxy stops at it."""

    class Scope(models.TextChoices):
        APP_KEY = "app_key", "App key"
        UPSTREAM_KEY = "upstream_key", "Upstream key"
        MODEL = "model", "Model"
        PROJECT = "project", "Project"

    class Period(models.TextChoices):
        DAY = "day", "Day (UTC)"
        MONTH = "month", "Month (UTC)"

    name = models.CharField(max_length=100, unique=True)
    scope = models.CharField(max_length=12, choices=Scope.choices)
    app_key = models.ForeignKey(AppKey, models.CASCADE, null=True, blank=True, related_name="budgets")
    upstream_key = models.ForeignKey(
        TogetherKey, models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    model = models.CharField(max_length=200, blank=True)
    project = models.CharField(
        max_length=200, blank=True, help_text="An upstream key's project (as its whoami named it)."
    )
    period = models.CharField(max_length=5, choices=Period.choices, default=Period.MONTH)
    amount_usd = models.DecimalField(
        max_digits=16, decimal_places=6, validators=[MinValueValidator(Decimal("0.000001"))]
    )
    # Percentages of the amount that alert, each once per period.
    thresholds = models.JSONField(default=default_thresholds)
    # App-key budgets only: over the amount, the proxy answers 429 until the period resets.
    enforce = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enforce", "scope"], name="budget_enforced_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def target_label(self) -> str:
        """What the budget covers, as pages and alerts name it (never a secret)."""
        if self.scope == self.Scope.APP_KEY and self.app_key is not None:
            return f"app key {self.app_key.name} (tdk_{self.app_key.prefix}_…)"
        if self.scope == self.Scope.UPSTREAM_KEY and self.upstream_key is not None:
            return f"upstream key {self.upstream_key.name}"
        if self.scope == self.Scope.MODEL:
            return f"model {self.model}"
        return f"project {self.project}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        wanted = {
            self.Scope.APP_KEY: ("app_key", self.app_key_id),
            self.Scope.UPSTREAM_KEY: ("upstream_key", self.upstream_key_id),
            self.Scope.MODEL: ("model", self.model.strip()),
            self.Scope.PROJECT: ("project", self.project.strip()),
        }
        if self.scope in wanted:
            field, value = wanted[self.scope]
            if not value:
                errors[field] = f"A {self.get_scope_display().lower()} budget needs one."
        if self.enforce and self.scope != self.Scope.APP_KEY:
            errors["enforce"] = "Only app-key budgets can be enforced: the proxy stops the app key."
        try:
            self.thresholds = clean_thresholds(self.thresholds)
        except ValidationError as exc:
            errors["thresholds"] = exc.messages[0]
        if errors:
            raise ValidationError(errors)
        self._clear_other_scopes()

    def _clear_other_scopes(self) -> None:
        """Only the field of the budget's scope is kept: a budget never covers two things."""
        if self.scope != self.Scope.APP_KEY:
            self.app_key = None
        if self.scope != self.Scope.UPSTREAM_KEY:
            self.upstream_key = None
        self.model = self.model.strip() if self.scope == self.Scope.MODEL else ""
        self.project = self.project.strip() if self.scope == self.Scope.PROJECT else ""

    def period_bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The UTC start of the current period and the moment it resets."""
        return period_bounds(self.period, now or timezone.now())


def clean_thresholds(value: object) -> list[int]:
    """Whole percentages between 1 and 1000, at least one, sorted, each once; "80, 100" is accepted."""
    if isinstance(value, str):
        value = [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError("Give at least one threshold, in percent of the amount (e.g. 80, 100).")
    found: set[int] = set()
    for part in value:
        try:
            number = int(str(part).strip().removesuffix("%"))
        except ValueError:
            raise ValidationError(f"{part!r} is not a whole percentage.") from None
        if not 1 <= number <= MAX_THRESHOLD:
            raise ValidationError(f"Thresholds are between 1 and {MAX_THRESHOLD} percent; {number} is not.")
        found.add(number)
    return sorted(found)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, reset) of the UTC day or month holding `now`."""
    now = now.astimezone(UTC)
    if period == Budget.Period.DAY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def format_usd(amount: Decimal) -> str:
    """Cents, with thousands separators; an amount under a cent keeps its digits (never shown as 0.00)."""
    if amount == 0 or abs(amount) >= Decimal("0.01"):
        return f"{amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"
    return format(amount.quantize(Decimal("0.00000001")).normalize(), "f")
