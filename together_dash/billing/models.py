"""What Together billed: organisations found through their keys' whoami, and the billing usage report's
finished windows and line items, stored as Together sent them (GET /v1/billing/usage).

A window is stored whole or not at all: a refetch that says the same changes nothing, one that says
something else (Together revised a finished window, e.g. late metering) replaces the window's items in
one transaction. A line item is identified within its window by its product, pricing dimensions,
attributes and unit price, hashed (`identity`), so the same line can never be stored twice.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from together_dash.keys.models import TogetherKey

# Amounts are decimal strings in USD; 18 places hold per-token prices (0.00000088) with room to spare.
# SQLite keeps 15 significant digits of them, PostgreSQL all; `raw` keeps the strings as sent.
AMOUNT_DIGITS = 38
AMOUNT_PLACES = 18


def amount_field() -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)


class Organization(models.Model):
    """A Together organisation: its billing usage is reported per organisation, whichever key asks."""

    organization_id = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    # When a complete report of its current and previous month was last stored.
    last_polled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "organization_id"]

    def __str__(self) -> str:
        return self.name or self.organization_id


class OrganizationKey(models.Model):
    """Which organisation an upstream key belongs to, as its latest whoami said."""

    key = models.OneToOneField(TogetherKey, models.CASCADE, related_name="billing_organization")
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="keys")
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key_id} -> {self.organization_id}"


class BillingMonth(models.Model):
    """The latest complete fetch of one organisation's month: how many windows, what they cost."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="months")
    month = models.CharField(max_length=7)  # YYYY-MM, UTC
    granularity = models.CharField(max_length=4)  # hour | day
    fetched_at = models.DateTimeField(default=timezone.now)
    windows = models.PositiveIntegerField(default=0)
    cost = amount_field()
    currency = models.CharField(max_length=3, default="USD")
    earliest_window_start = models.DateTimeField(null=True, blank=True)
    latest_window_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "organization"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "month", "granularity"], name="billingmonth_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.month} ({self.granularity})"


class BillingWindow(models.Model):
    """One finished window (an hour or a UTC day) of an organisation's report, as last fetched."""

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="windows")
    granularity = models.CharField(max_length=4)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    date = models.CharField(max_length=10)
    # sha256 of the window's items as sent: a refetch with the same digest changes nothing.
    digest = models.CharField(max_length=64)
    cost = amount_field()
    fetched_at = models.DateTimeField(default=timezone.now)
    revisions = models.PositiveIntegerField(default=0)
    revised_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization", "start_time"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "granularity", "start_time"], name="billingwindow_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.start_time:%Y-%m-%d %H:%M} ({self.granularity})"


class BillingLineItem(models.Model):
    """One line of a window: quantity x unit price = cost, in USD, exactly as Together reported it."""

    window = models.ForeignKey(BillingWindow, models.CASCADE, related_name="line_items")
    # Repeated from the window, so a reconciliation can read items by time without a join.
    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    product_name = models.CharField(max_length=200)
    quantity = amount_field()
    unit_price = amount_field()
    cost = amount_field()
    pricing_dimensions = models.JSONField(default=dict, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    applied_credit = models.CharField(max_length=16, blank=True)  # PREPAID, POSTPAID, CREDIT or ""
    # sha256 of window start and end, product, pricing dimensions, attributes and unit price.
    identity = models.CharField(max_length=64)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["start_time", "product_name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "identity"], name="billinglineitem_unique"),
        ]
        indexes = [
            models.Index(fields=["organization", "start_time"], name="billingitem_org_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.start_time:%Y-%m-%d %H:%M} {self.product_name}: {self.cost}"


class CreditBalance(models.Model):
    """A prepaid balance an admin read off Together's console, and when it was true.

    Together has no balance API, so this is the only balance the dashboard knows. Every entry is kept;
    the latest entered one of its organisation (or account-wide, organisation empty) applies.
    """

    # Empty: account-wide, entered before any organisation was known; it applies until one has its own.
    organization = models.ForeignKey(
        Organization, models.PROTECT, null=True, blank=True, related_name="credit_balances"
    )
    balance_usd = models.DecimalField(max_digits=14, decimal_places=2)
    as_of = models.DateTimeField()
    entered_at = models.DateTimeField(default=timezone.now)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text too: the history outlives the user.
    entered_by_name = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=8)  # web | command, as in the key audit log

    class Meta:
        ordering = ["-entered_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-entered_at", "-id"], name="creditbalance_org_latest_idx"),
        ]

    def __str__(self) -> str:
        scope = str(self.organization) if self.organization_id else "account-wide"
        return f"${self.balance_usd} as of {self.as_of:%Y-%m-%d %H:%M} ({scope})"


class BillingDay(models.Model):
    """One organisation's line items of one UTC day, as the reconciliation shows them: per model (its
    input, cached input and output tokens side by side), or per charge with no request behind it.

    What a reconciliation by day reads instead of every hourly item; store_month keeps it in step with
    the items of every day whose windows it added, revised or removed (polling.summarize_days).
    """

    organization = models.ForeignKey(Organization, models.CASCADE, related_name="+")
    day = models.DateTimeField()  # UTC midnight
    model = models.CharField(max_length=200, blank=True)  # the catalog model id the lines name
    # "" for a model's per-request usage; a charge's product name (billing.products says which is which).
    product_name = models.CharField(max_length=200, blank=True)
    resource = models.JSONField(default=dict, blank=True)  # a charge's dimensions and attributes
    # sha256 of what makes the row: the model, or the charge's product and resource.
    group_key = models.CharField(max_length=64)
    input_tokens = amount_field()
    cached_input_tokens = amount_field()
    output_tokens = amount_field()
    quantity = amount_field()  # every line's quantity, tokens or not
    unit = models.CharField(max_length=20, blank=True)
    cost = amount_field()

    class Meta:
        ordering = ["day", "model", "product_name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "day", "group_key"], name="billingday_unique"),
        ]
        indexes = [models.Index(fields=["day"], name="billingday_day_idx")]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.product_name or self.model}: {self.cost}"
