"""Entering a prepaid credit balance: the checks, the admin form and the service the form and
`manage.py set_credit_balance` share. Every entry is kept and audited like a key action."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django import forms
from django.db import transaction
from django.utils import timezone

from together_dash.billing.models import CreditBalance, Organization
from together_dash.keys import audit
from together_dash.keys.audit import Actor
from together_dash.keys.models import AuditLog

MAX_DIGITS, PLACES = 14, 2  # CreditBalance.balance_usd


class BalanceError(ValueError):
    """An entry that cannot be stored; the message says what to fix."""


def parse_amount(text: str) -> Decimal:
    """A balance in US dollars, as typed: "1234.56"; never a float."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise BalanceError(f"{text.strip()[:40]!r} is not a number: give US dollars, e.g. 1234.56.") from None
    check_amount(amount)
    return amount


def check_amount(amount: Decimal) -> None:
    if not amount.is_finite():
        raise BalanceError("The balance must be a number of US dollars, e.g. 1234.56.")
    if amount < 0:
        raise BalanceError("The balance cannot be negative: Together is prepaid (enter 0 if it ran out).")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -PLACES and amount != amount.quantize(Decimal(1).scaleb(-PLACES)):
        raise BalanceError("Give the balance in dollars and cents: at most two decimal places.")
    if amount.adjusted() >= MAX_DIGITS - PLACES:
        raise BalanceError(f"The balance must be below ${10 ** (MAX_DIGITS - PLACES):,}.")


def check_as_of(as_of: datetime, now: datetime | None = None) -> None:
    if timezone.is_naive(as_of):
        raise BalanceError("The date of the balance needs a time zone.")
    if as_of > (now or timezone.now()):
        raise BalanceError("The balance's date is in the future: give when Together showed it.")


def organization_choices() -> list[Organization]:
    return list(Organization.objects.order_by("name", "organization_id"))


def resolve_organization(organization: Organization | None, known: list[Organization]) -> Organization | None:
    """The organisation an entry is for: required when there are several, the only one when one."""
    if organization is not None:
        return organization
    if len(known) > 1:
        raise BalanceError("This account has several organisations: say which one the balance is for.")
    return known[0] if known else None  # none known yet: account-wide


@transaction.atomic
def enter_balance(
    amount: Decimal,
    as_of: datetime,
    actor: Actor,
    organization: Organization | None = None,
    now: datetime | None = None,
) -> CreditBalance:
    """Check, store and audit one balance entry; it applies from now on."""
    now = now or timezone.now()
    check_amount(amount)
    check_as_of(as_of, now)
    organization = resolve_organization(organization, organization_choices())
    user = actor.db_user
    balance = CreditBalance.objects.create(
        organization=organization,
        balance_usd=amount.quantize(Decimal(1).scaleb(-PLACES)) + 0,  # + 0: never "-0.00"
        # In UTC: PostgreSQL refuses offsets past 15:59, which ISO 8601 (and Python) allow.
        as_of=as_of.astimezone(UTC),
        entered_at=now,
        entered_by=user,
        entered_by_name=user.get_username() if user else "",
        via=actor.via,
    )
    audit.record(
        AuditLog.Action.CREATE, AuditLog.Outcome.SUCCESS, actor, key=balance,
        key_type=AuditLog.KeyType.CREDIT, label=_label(balance), detail=_detail(balance),
    )
    return balance


def _label(balance: CreditBalance) -> str:
    return f"credit balance {balance.organization or 'account-wide'}"[:120]


def _detail(balance: CreditBalance) -> str:
    return f"${balance.balance_usd:,.2f} as of {balance.as_of.isoformat(timespec='minutes')}"


def record_refusal(actor: Actor, reason: str) -> None:
    """A refused entry (not an admin, or bad input) is audited too, as key actions are."""
    audit.record(
        AuditLog.Action.CREATE, AuditLog.Outcome.FAILURE, actor,
        key_type=AuditLog.KeyType.CREDIT, label="credit balance", detail=reason,
    )


class CreditBalanceForm(forms.Form):
    """The admin form: a balance in US dollars, when it was true, and whose it is."""

    balance_usd = forms.CharField(
        label="Balance (USD)",
        max_length=40,
        widget=forms.TextInput(
            attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "1234.56"}
        ),
        help_text="The prepaid balance Together's billing page shows, in dollars and cents.",
    )
    as_of = forms.DateTimeField(
        label="True at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="When Together showed that balance; not in the future.",
    )
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.order_by("name", "organization_id"),
        required=False,
        empty_label=None,
        label="Organisation",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["as_of"].label = f"True at ({timezone.get_current_timezone_name()})"
        if not Organization.objects.exists():
            del self.fields["organization"]  # none known yet: the balance is account-wide

    def clean_balance_usd(self) -> Decimal:
        try:
            return parse_amount(self.cleaned_data["balance_usd"])
        except BalanceError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_as_of(self) -> datetime:
        as_of = self.cleaned_data["as_of"]
        try:
            check_as_of(as_of)
        except BalanceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return as_of
