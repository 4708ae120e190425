"""Typed results for the Together endpoints we call, tolerant of missing and extra fields."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Self


class FineTuneStatus:
    """Fine-tune job statuses (ref §2.3); user_error exists only in the v1 SDK but is real."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPRESSING = "compressing"
    UPLOADING = "uploading"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    ERROR = "error"
    USER_ERROR = "user_error"
    COMPLETED = "completed"

    ALL: tuple[str, ...] = (
        PENDING, QUEUED, RUNNING, COMPRESSING, UPLOADING,
        CANCEL_REQUESTED, CANCELLED, ERROR, USER_ERROR, COMPLETED,
    )
    TERMINAL: frozenset[str] = frozenset({ERROR, USER_ERROR, COMPLETED, CANCELLED})


class BatchStatus:
    """Batch job statuses (ref §2.6), upper case; CANCELING appears only in the v1 SDK."""

    VALIDATING = "VALIDATING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELING = "CANCELING"
    CANCELLED = "CANCELLED"

    ALL: tuple[str, ...] = (VALIDATING, IN_PROGRESS, COMPLETED, FAILED, EXPIRED, CANCELING, CANCELLED)
    TERMINAL: frozenset[str] = frozenset({COMPLETED, FAILED, EXPIRED, CANCELLED})


# ---- field readers: garbage in, None out -------------------------------------------------------------

def _mapping(data: Any) -> Mapping[str, Any]:
    """The object itself; anything but a JSON object is a malformed response."""
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _member(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A nested object of a response, or an empty one when it is missing or not an object."""
    value = data.get(name)
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # no float round trip: counts above 2**53 must stay exact
    number = _float(value)
    return int(number) if number is not None else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _datetime(value: Any) -> datetime | None:
    """ISO-8601 strings (the API's form) or unix seconds, always returned timezone-aware."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The first present key: the API spells some fields two ways (FileType / type)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


# ---- models ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Pricing:
    """Model prices; input/output are USD per million tokens."""

    hourly: float | None = None
    input: float | None = None
    output: float | None = None
    base: float | None = None
    finetune: float | None = None
    cached_input: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from the `pricing` object."""
        data = _mapping(data)
        return cls(**{name: _float(data.get(name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Model:
    """One entry of GET /models."""

    id: str
    object: str | None = None
    created: int | None = None
    type: str | None = None
    display_name: str | None = None
    organization: str | None = None
    link: str | None = None
    license: str | None = None
    context_length: int | None = None
    pricing: Pricing | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from one model object."""
        data = _mapping(data)
        pricing = data.get("pricing")
        return cls(
            id=_required_id(data),
            object=_str(data.get("object")),
            created=_int(data.get("created")),
            type=_str(data.get("type")),
            display_name=_str(data.get("display_name")),
            organization=_str(data.get("organization")),
            link=_str(data.get("link")),
            license=_str(data.get("license")),
            context_length=_int(data.get("context_length")),
            pricing=Pricing.from_json(pricing) if isinstance(pricing, Mapping) else None,
            raw=data,
        )


def _required_id(data: Mapping[str, Any]) -> str:
    """An object without an id cannot be tracked: treat it as a malformed response."""
    value = _str(data.get("id"))
    if not value:
        raise ValueError("object has no id")
    return value


# ---- fine-tunes --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FineTuneEvent:
    """One fine-tune event; `type` is kept as sent because its case differs between API versions."""

    created_at: datetime | None = None
    level: str | None = None
    message: str | None = None
    type: str | None = None
    step: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from one fine-tune event object."""
        data = _mapping(data)
        return cls(
            created_at=_datetime(data.get("created_at")),
            level=_str(data.get("level")),
            message=_str(data.get("message")),
            type=_str(data.get("type")),
            step=_int(data.get("step")),
            raw=data,
        )

    @property
    def type_normalized(self) -> str | None:
        """Lower-cased type, so JOB_PENDING and job_pending compare equal."""
        return self.type.lower() if self.type else None


@dataclass(frozen=True, slots=True)
class FineTuneJob:
    """A fine-tune job, full (GET /fine-tunes/{id}) or truncated (create, list, cancel)."""

    id: str
    status: str | None = None
    model: str | None = None
    model_output_name: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    n_epochs: int | None = None
    epochs_completed: int | None = None
    total_steps: int | None = None
    steps_completed: int | None = None
    token_count: int | None = None
    param_count: int | None = None
    total_price: int | None = None
    seconds_remaining: int | None = None
    events: tuple[FineTuneEvent, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from a fine-tune job object."""
        data = _mapping(data)
        progress = _member(data, "progress")
        status = _str(data.get("status"))
        return cls(
            id=_required_id(data),
            status=status.lower() if status else None,
            model=_str(data.get("model")),
            model_output_name=_str(_first(data, "model_output_name", "output_name")),
            training_file=_str(data.get("training_file")),
            validation_file=_str(data.get("validation_file")) or None,
            created_at=_datetime(data.get("created_at")),
            updated_at=_datetime(data.get("updated_at")),
            started_at=_datetime(data.get("started_at")),
            n_epochs=_int(data.get("n_epochs")),
            epochs_completed=_int(data.get("epochs_completed")),
            total_steps=_int(data.get("total_steps")),
            steps_completed=_int(data.get("steps_completed")),
            token_count=_int(data.get("token_count")),
            param_count=_int(data.get("param_count")),
            total_price=_int(data.get("total_price")),
            seconds_remaining=_int(progress.get("seconds_remaining")),
            events=tuple(FineTuneEvent.from_json(item) for item in _objects(data.get("events"))),
            raw=data,
        )

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change (completed, cancelled, error, user_error)."""
        return self.status in FineTuneStatus.TERMINAL

    @property
    def progress_percent(self) -> float | None:
        """Progress from steps when known, else from epochs; None when the API gave neither."""
        for done, total in ((self.steps_completed, self.total_steps), (self.epochs_completed, self.n_epochs)):
            if done is not None and total:
                return max(0.0, min(100.0, done / total * 100.0))
        if self.status == FineTuneStatus.COMPLETED:
            return 100.0
        return None


# ---- batches -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BatchJob:
    """A batch job; create answers {job, warning}, everything else the bare job."""

    id: str
    status: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    endpoint: str | None = None
    model_id: str | None = None
    progress: float | None = None
    file_size_bytes: int | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    job_deadline: datetime | None = None
    error: str | None = None
    user_id: str | None = None
    warning: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from a batch object, unwrapping the create response's {"job": ...} when present."""
        data = _mapping(data)
        warning = None
        if isinstance(data.get("job"), Mapping):
            warning = _str(data.get("warning"))
            data = data["job"]
        status = _str(data.get("status"))
        return cls(
            id=_required_id(data),
            status=status.upper() if status else None,
            input_file_id=_str(data.get("input_file_id")),
            output_file_id=_str(data.get("output_file_id")) or None,
            error_file_id=_str(data.get("error_file_id")) or None,
            endpoint=_str(data.get("endpoint")),
            model_id=_str(data.get("model_id")),
            progress=_float(data.get("progress")),
            file_size_bytes=_int(data.get("file_size_bytes")),
            created_at=_datetime(data.get("created_at")),
            completed_at=_datetime(data.get("completed_at")),
            job_deadline=_datetime(data.get("job_deadline")),
            error=_str(data.get("error")) or None,
            user_id=_str(data.get("user_id")),
            warning=warning,
            raw=data,
        )

    @property
    def is_terminal(self) -> bool:
        """True once the batch can no longer change."""
        return self.status in BatchStatus.TERMINAL


# ---- files -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FileObject:
    """An uploaded file; the API capitalises FileType, Processed and LineCount."""

    id: str
    filename: str | None = None
    bytes: int | None = None
    purpose: str | None = None
    created_at: int | None = None
    file_type: str | None = None
    processed: bool | None = None
    line_count: int | None = None
    processing_status: str | None = None
    object: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from a FileResponse object."""
        data = _mapping(data)
        return cls(
            id=_required_id(data),
            filename=_str(data.get("filename")),
            bytes=_int(data.get("bytes")),
            purpose=_str(data.get("purpose")),
            created_at=_int(data.get("created_at")),
            file_type=_str(_first(data, "FileType", "type", "file_type")),
            processed=_bool(_first(data, "Processed", "processed")),
            line_count=_int(_first(data, "LineCount", "line_count")),
            processing_status=_str(data.get("processing_status")),
            object=_str(data.get("object")),
            raw=data,
        )


# ---- identity ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WhoAmI:
    """Who a key belongs to (GET /whoami)."""

    api_key_id: str | None = None
    organization_id: str | None = None
    organization_name: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    project_slug: str | None = None
    user_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from the whoami object."""
        data = _mapping(data)
        names = [name for name in cls.__dataclass_fields__ if name != "raw"]
        return cls(**{name: _str(data.get(name)) for name in names}, raw=data)


# ---- billing usage (GET /v1/billing/usage; together 3.x organization.usage.costs) --------------------

def _decimal(value: Any) -> Decimal:
    """A decimal string (the report's form) or a JSON integer, exactly; anything else is malformed."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"expected a decimal string, got {type(value).__name__}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc
    if not number.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return number


def _strings(value: Any) -> dict[str, str]:
    """A {str: str} object (pricing dimensions, attributes); values the API sent as numbers become text."""
    if value is None:
        return {}
    return {str(key): str(item) for key, item in _mapping(value).items()}


def _required_datetime(value: Any) -> datetime:
    parsed = _datetime(value)
    if parsed is None:
        raise ValueError(f"expected an ISO-8601 time, got {value!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class BillingLineItem:
    """One line of a billing window: `quantity` of `product_name` at `unit_price`, costing `cost` (USD)."""

    product_name: str
    quantity: Decimal
    unit_price: Decimal
    cost: Decimal
    pricing_dimensions: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    applied_credit: str | None = None  # PREPAID, POSTPAID or CREDIT; None for uncovered usage
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        data = _mapping(data)
        credit = data.get("applied_credit")
        return cls(
            product_name=_str(data.get("product_name")) or "",
            quantity=_decimal(data.get("quantity")),
            unit_price=_decimal(data.get("unit_price")),
            cost=_decimal(data.get("cost")),
            pricing_dimensions=_strings(data.get("pricing_dimensions")),
            attributes=_strings(data.get("attributes")),
            applied_credit=_str(credit.get("type")) if isinstance(credit, Mapping) else None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class BillingWindow:
    """One finished time window of the report (an hour or a UTC day) and its line items."""

    date: str
    start_time: datetime
    end_time: datetime
    line_items: tuple[BillingLineItem, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Self:
        data = _mapping(data)
        return cls(
            date=_str(data.get("date")) or "",
            start_time=_required_datetime(data.get("start_time")),
            end_time=_required_datetime(data.get("end_time")),
            line_items=tuple(BillingLineItem.from_json(item) for item in _objects(data.get("line_items"))),
        )


@dataclass(frozen=True, slots=True)
class BillingUsageReport:
    """One page of an organisation's billing usage for a month; next_cursor names the next page."""

    organization_id: str
    billing_period: str
    currency: str
    data: tuple[BillingWindow, ...] = ()
    earliest_window_start: datetime | None = None
    latest_window_end: datetime | None = None
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Self:
        data = _mapping(data)
        if not isinstance(data.get("data"), list):
            raise TypeError("expected a data array of windows")
        return cls(
            organization_id=_str(data.get("organization_id")) or "",
            billing_period=_str(data.get("billing_period")) or "",
            currency=_str(data.get("currency")) or "",
            data=tuple(BillingWindow.from_json(window) for window in _objects(data["data"])),
            earliest_window_start=_datetime(data.get("earliest_window_start")),
            latest_window_end=_datetime(data.get("latest_window_end")),
            next_cursor=_str(data.get("next_cursor")) or None,
        )


# ---- dedicated endpoints and hardware (GET /v1/endpoints, GET /v1/hardware; ref §8.4) -----------------

class EndpointState:
    """A dedicated endpoint's states (ref §8.4)."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ERROR = "ERROR"

    ALL: tuple[str, ...] = (PENDING, STARTING, STARTED, STOPPING, STOPPED, ERROR)


def _price(value: Any) -> Decimal | None:
    """A price read with parse_float=Decimal (or an integer or decimal string), exactly; else None."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


@dataclass(frozen=True, slots=True)
class DedicatedEndpoint:
    """One dedicated endpoint of GET /v1/endpoints: `name` is what inference requests send as model."""

    id: str
    name: str
    model: str
    hardware: str
    state: str
    type: str = "dedicated"
    display_name: str | None = None
    owner: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    inactive_timeout: int | None = None  # minutes; None or 0: never stops by itself
    created_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        data = _mapping(data)
        scaling = _member(data, "autoscaling")
        return cls(
            id=_required_id(data),
            name=_str(data.get("name")) or "",
            model=_str(data.get("model")) or "",
            hardware=_str(data.get("hardware")) or "",
            state=(_str(data.get("state")) or "").upper(),
            type=_str(data.get("type")) or "dedicated",
            display_name=_str(data.get("display_name")),
            owner=_str(data.get("owner")),
            min_replicas=_int(scaling.get("min_replicas")),
            max_replicas=_int(scaling.get("max_replicas")),
            inactive_timeout=_int(data.get("inactive_timeout")) or None,
            created_at=_datetime(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Hardware:
    """One hardware configuration of GET /v1/hardware; Together prices it in cents per minute."""

    id: str
    cents_per_minute: Decimal | None = None
    gpu_type: str | None = None
    gpu_link: str | None = None
    gpu_memory: int | None = None  # GB per GPU
    gpu_count: int | None = None
    availability: str | None = None  # only with a model filter: available | unavailable | insufficient
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from a hardware object parsed with parse_float=Decimal, so the price stays exact."""
        data = _mapping(data)
        pricing = _member(data, "pricing")
        specs = _member(data, "specs")
        availability = _member(data, "availability")
        return cls(
            id=_required_id(data),
            cents_per_minute=_price(pricing.get("cents_per_minute")),
            gpu_type=_str(specs.get("gpu_type")),
            gpu_link=_str(specs.get("gpu_link")),
            gpu_memory=_int(specs.get("gpu_memory")),
            gpu_count=_int(specs.get("gpu_count")),
            availability=_str(availability.get("status")),
            updated_at=_datetime(data.get("updated_at")),
            raw=data,
        )
