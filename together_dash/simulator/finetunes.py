"""Fine-tune jobs that advance with (simulated) time through Together's statuses, emitting events.

A job's whole timeline is decided when it is created (and rewritten on cancel), so its state at any
instant is a pure function of the clock: tests freeze the clock and advance it, and nothing runs in
the background. At job_speed 1 a job spends 2 s pending, 3 s queued, 2 s per training step, 5 s
compressing and 5 s uploading; job_speed X divides all of these by X.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from together_dash.simulator import catalog, errors, inference
from together_dash.simulator.clock import iso
from together_dash.simulator.files import line_count
from together_dash.simulator.wire import Request, Response, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

PENDING_S, QUEUED_S, STEP_S, COMPRESS_S, UPLOAD_S, CANCEL_S = 2.0, 3.0, 2.0, 5.0, 5.0, 1.0
TERMINAL = frozenset({"completed", "cancelled", "error", "user_error"})
FAILURE_MESSAGES = {
    "error": "Job failed due to an internal error. Your account will not be charged; please retry.",
    "user_error": (
        "Training failed: the training file has samples longer than the model's maximum sequence length."
    ),
}


def model_limits(model: catalog.CatalogModel) -> dict[str, Any]:
    """GET /fine-tunes/models/limits for a fine-tunable model (the fields the SDK's create() reads)."""
    big = model.param_count > 20_000_000_000
    return {
        "model_name": model.id,
        "default_gradient_accumulation_steps": 1,
        "max_num_epochs": 20,
        "max_num_checkpoints": 10,
        "max_num_evals": 100,
        "min_learning_rate": 1e-8,
        "max_learning_rate": 1.0,
        "max_seq_length_sft": 8192 if big else 16384,
        "max_seq_length_dpo": 4096 if big else 8192,
        "min_max_seq_length": 512,
        "merge_output_lora": True,
        "supports_full_training": not big,
        "supports_reasoning": False,
        "supports_tools": True,
        "supports_vision": False,
        "lora_training": {
            "default_rank": 64,
            "max_rank": 64,
            "max_batch_size": 8 if big else 32,
            "max_batch_size_dpo": 4 if big else 16,
            "min_batch_size": 8 if big else 8,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"],
        },
        "full_training": None
        if big
        else {"max_batch_size": 16, "max_batch_size_dpo": 8, "min_batch_size": 8},
    }


@dataclass(slots=True)
class FineTuneJob:
    id: str
    model: str
    settings: dict[str, Any]  # request echo: hyper-parameters, files, suffix, wandb
    created: float
    speed: float
    total_steps: int
    steps_per_epoch: int
    token_count: int
    param_count: int
    output_name: str
    user_id: str
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    start_at: float = 0.0
    train_end_at: float = 0.0
    done_at: float = 0.0
    stop_at: float | None = None  # when a failure or a cancel cuts the timeline
    stop_status: str = ""  # "error", "user_error" or "cancel"

    def status_at(self, now: float) -> str:
        if self.stop_at is not None and now >= self.stop_at:
            if self.stop_status == "cancel":
                return "cancelled" if now >= self.stop_at + CANCEL_S / self.speed else "cancel_requested"
            return self.stop_status
        created, speed = self.created, self.speed
        if now < created + PENDING_S / speed:
            return "pending"
        if now < self.start_at:
            return "queued"
        if now < self.train_end_at:
            return "running"
        if now < self.train_end_at + COMPRESS_S / speed:
            return "compressing"
        return "uploading" if now < self.done_at else "completed"

    def steps_at(self, now: float) -> int:
        until = min(now, self.stop_at) if self.stop_at is not None else now
        if until <= self.start_at:
            return 0
        return min(self.total_steps, int((until - self.start_at) / (STEP_S / self.speed)))

    def visible_events(self, now: float) -> list[dict[str, Any]]:
        return [event for at, event in self.events if at <= now]

    def to_json(self, now: float, full: bool = True) -> dict[str, Any]:
        status = self.status_at(now)
        steps = self.steps_at(now)
        events = self.visible_events(now)
        updated = events[-1]["created_at"] if events else iso(self.created)
        remaining = 0 if status in TERMINAL else max(0, math.ceil(self.done_at - now))
        data = {
            "id": self.id,
            "status": status,
            "model": self.model,
            "model_output_name": self.output_name,
            "model_output_path": f"s3://together-simulator/finetune/{self.id}/{self.output_name}",
            "adapter_output_name": f"{self.output_name}-adapter",
            "created_at": iso(self.created),
            "updated_at": updated,
            "started_at": iso(self.start_at) if now >= self.start_at else None,
            "user_id": self.user_id,
            "owner_address": self.user_id,
            **self.settings,
            "token_count": self.token_count,
            "param_count": self.param_count,
            "total_price": self._price_cents(),
            "total_steps": self.total_steps,
            "steps_completed": steps,
            "epochs_completed": steps // self.steps_per_epoch,
            "evals_completed": 0,
            "queue_depth": 1 if status == "queued" else 0,
            "progress": {"estimate_available": status not in TERMINAL, "seconds_remaining": remaining},
            "events": events if full else [],
        }
        return data

    def _price_cents(self) -> int:
        # total_price's unit is undocumented (reference §2.2); the simulator reports US cents.
        entry = catalog.get(self.model)
        per_million = entry.finetune_price if entry else 0.0
        epochs = self.settings.get("n_epochs", 1)
        return round(self.token_count * epochs * per_million / 1_000_000 * 100)


class FineTuneStore:
    def __init__(self) -> None:
        self.jobs: dict[str, FineTuneJob] = {}


def _event(
    at: float,
    type_: str,
    message: str,
    job: FineTuneJob,
    level: str = "info",
    step: int = 0,
    checkpoint_path: str = "",
) -> tuple[float, dict[str, Any]]:
    return at, {
        "object": "fine-tune-event",
        "created_at": iso(at),
        "level": level,
        "message": message,
        "type": type_,
        "param_count": job.param_count,
        "token_count": job.token_count,
        "total_steps": job.total_steps,
        "wandb_url": "",
        "step": step or 0,  # an integer on every event, as the document requires (0: not a step event)
        "checkpoint_path": checkpoint_path,
        "model_path": "",
        "training_offset": 0,
        "hash": "",
    }


def build_timeline(job: FineTuneJob, failure: dict[str, Any] | None) -> None:
    """Fill in the job's phase times and its events, cut short by a scenario failure."""
    speed = job.speed
    job.start_at = job.created + (PENDING_S + QUEUED_S) / speed
    job.train_end_at = job.start_at + job.total_steps * STEP_S / speed
    job.done_at = job.train_end_at + (COMPRESS_S + UPLOAD_S) / speed
    step_dt = STEP_S / speed
    events = [
        _event(job.created, "job_pending", "Fine tune request created", job),
        _event(job.start_at, "job_start", f"Job started at {iso(job.start_at)}", job),
        _event(job.start_at, "model_downloading", f"Downloading model data for {job.model}", job),
        _event(job.start_at, "model_download_complete", "Model data downloaded", job),
        _event(job.start_at, "training_data_downloading", "Downloading training data", job),
        _event(job.start_at, "training_data_download_complete", "Training data downloaded", job),
        _event(job.start_at, "training_start", f"Training started for model {job.model}", job),
    ]
    epochs = job.settings.get("n_epochs", 1)
    checkpoints = _checkpoint_steps(job.total_steps, job.settings.get("n_checkpoints", 1))
    for epoch in range(1, epochs + 1):
        step = epoch * job.steps_per_epoch
        events.append(
            _event(
                job.start_at + step * step_dt,
                "epoch_complete",
                f"Epoch completed, at step {step}",
                job,
                step=step,
            )
        )
    for step in checkpoints:
        path = f"s3://together-simulator/finetune/{job.id}/checkpoints/{step}"
        events.append(
            _event(
                job.start_at + step * step_dt,
                "checkpoint_save",
                f"New checkpoint saved at step {step}",
                job,
                step=step,
                checkpoint_path=path,
            )
        )
    compress_at = job.train_end_at
    upload_at = compress_at + COMPRESS_S / speed
    events += [
        _event(
            compress_at,
            "training_complete",
            f"Training completed for {job.model} at step {job.total_steps}",
            job,
            step=job.total_steps,
        ),
        _event(compress_at, "model_compressing", "Compressing output model", job),
        _event(upload_at, "model_compression_complete", "Model compression complete", job),
        _event(upload_at, "model_uploading", f"Uploading output model {job.output_name}", job),
        _event(job.done_at, "model_upload_complete", "Model upload complete", job),
        _event(job.done_at, "job_complete", f"Job finished at {iso(job.done_at)}", job),
    ]
    events.sort(key=lambda pair: pair[0])  # stable: same-time events keep their narrative order
    job.events = events
    if failure is not None:
        at = job.start_at + float(failure.get("at_progress", 0.5)) * (job.train_end_at - job.start_at)
        status = failure.get("status", "error")
        message = failure.get("message") or FAILURE_MESSAGES[status]
        job.events = [pair for pair in events if pair[0] < at or pair[0] <= job.created]
        job.events.append(_event(at, "job_error", message, job, level="error"))
        job.stop_at, job.stop_status = at, status


def _checkpoint_steps(total_steps: int, n_checkpoints: int) -> list[int]:
    n = max(1, min(n_checkpoints or 1, total_steps))
    return sorted({max(1, round(total_steps * (i + 1) / n)) for i in range(n)})


def _not_found(job_id: str) -> Response:
    message = f"Fine-tune job {job_id} not found. Please check the job ID and try again."
    return Response(404, errors.body(message, "invalid_request_error", param="id", code="not_found"))


def _bad(message: str, param: str | None = None) -> Response:
    return Response(400, errors.invalid_request(message, param=param))


def _settings(body: dict[str, Any], model: catalog.CatalogModel) -> dict[str, Any]:
    """The request's hyper-parameters as the job echoes them, with Together's defaults filled in."""
    limits = model_limits(model)
    training_type = body.get("training_type") or {
        "type": "Lora",
        "lora_r": 64,
        "lora_alpha": 128,
        "lora_dropout": 0.0,
        "lora_trainable_modules": "all-linear",
    }
    lora = training_type.get("type") == "Lora"
    batch_size = body.get("batch_size", "max")
    if batch_size == "max" or not isinstance(batch_size, int):
        batch_size = limits["lora_training" if lora else "full_training"]["max_batch_size"]
    return {
        "training_file": body.get("training_file"),
        "validation_file": body.get("validation_file") or "",
        "n_epochs": int(body.get("n_epochs") or 1),
        "n_checkpoints": int(body.get("n_checkpoints") or 1),
        "n_evals": int(body.get("n_evals") or 0),
        "batch_size": batch_size,
        "learning_rate": body.get("learning_rate", 0.00001),
        "lr_scheduler": body.get("lr_scheduler")
        or {
            "lr_scheduler_type": "cosine",
            "lr_scheduler_args": {"min_lr_ratio": 0.0, "num_cycles": 0.5},
        },
        "warmup_ratio": body.get("warmup_ratio", 0.0),
        "max_grad_norm": body.get("max_grad_norm", 1.0),
        "weight_decay": body.get("weight_decay", 0.0),
        "eval_steps": 0,
        "training_type": training_type,
        "training_method": body.get("training_method") or {"method": "sft", "train_on_inputs": "auto"},
        "train_on_inputs": body.get("train_on_inputs", "auto"),
        "suffix": body.get("suffix") or "",
        "packing": body.get("packing", True),
        "max_seq_length": body.get("max_seq_length") or limits["max_seq_length_sft"],
        "wandb_project_name": body.get("wandb_project_name") or "",
        "wandb_name": body.get("wandb_name") or "",
        "wandb_url": "",
        "trainingfile_numlines": 0,
        "trainingfile_size": 0,
    }


async def create(state: SimulatorState, request: Request) -> Response:
    body = request.json()
    if not isinstance(body, dict):
        return _bad("Request body must be a JSON object")
    model_id = body.get("model") or ""
    from_checkpoint = body.get("from_checkpoint")
    if not model_id and from_checkpoint:
        parent = state.finetunes.jobs.get(str(from_checkpoint).split(":")[0])
        model_id = parent.model if parent else ""
    model = catalog.get(model_id)
    if model is None or not model.finetunable:
        return _bad(
            f"Model {model_id or '(none)'} is not available for fine-tuning. "
            "See https://docs.together.ai/docs/fine-tuning-models for supported models.",
            "model",
        )
    training = state.files.get(str(body.get("training_file") or ""))
    if training is None:
        return _bad(f"Training file {body.get('training_file') or '(none)'} not found", "training_file")
    validation_id = body.get("validation_file")
    if validation_id and state.files.get(validation_id) is None:
        return _bad(f"Validation file {validation_id} not found", "validation_file")
    if len(body.get("suffix") or "") > 40:
        return _bad("Suffix must be at most 40 characters long", "suffix")
    if not state.has_credit():
        return Response(402, errors.credit_limit())
    settings = _settings(body, model)
    samples = max(1, line_count(training.data))
    settings["trainingfile_numlines"] = samples
    settings["trainingfile_size"] = len(training.data)
    steps_per_epoch = max(1, math.ceil(samples / settings["batch_size"]))
    job_id = f"ft-{uuid.uuid4()}"
    suffix = f"-{settings['suffix']}" if settings["suffix"] else ""
    base_name = model.id.split("/")[-1]
    job = FineTuneJob(
        id=job_id,
        model=model.id,
        settings=settings,
        created=state.clock.now(),
        speed=state.scenario.job_speed,
        total_steps=steps_per_epoch * settings["n_epochs"],
        steps_per_epoch=steps_per_epoch,
        token_count=sum(
            inference.count_tokens(line) for line in training.data.decode("utf-8", "replace").splitlines()
        ),
        param_count=model.param_count,
        output_name=f"{state.user_slug(request.key)}/{base_name}{suffix}-{job_id[3:9]}",
        user_id=state.whoami(request.key)["user_id"],
    )
    build_timeline(job, _failure_for(state, settings["suffix"]))
    state.finetunes.jobs[job.id] = job
    return json_response(job.to_json(job.created, full=False))


def _failure_for(state: SimulatorState, suffix: str) -> dict[str, Any] | None:
    """The scenario's failure, or one asked for by the job suffix ("sim-error" / "sim-user-error")."""
    if "sim-user-error" in suffix:
        return {"status": "user_error"}
    if "sim-error" in suffix:
        return {"status": "error"}
    return state.scenario.finetune_failure


async def list_jobs(state: SimulatorState, request: Request) -> Response:
    now = state.clock.now()
    return json_response({"data": [job.to_json(now, full=False) for job in state.finetunes.jobs.values()]})


async def retrieve(state: SimulatorState, request: Request) -> Response:
    job = state.finetunes.jobs.get(request.params[0])
    return json_response(job.to_json(state.clock.now())) if job else _not_found(request.params[0])


async def events(state: SimulatorState, request: Request) -> Response:
    job = state.finetunes.jobs.get(request.params[0])
    if job is None:
        return _not_found(request.params[0])
    return json_response({"object": "list", "data": job.visible_events(state.clock.now())})


async def checkpoints(state: SimulatorState, request: Request) -> Response:
    job = state.finetunes.jobs.get(request.params[0])
    if job is None:
        return _not_found(request.params[0])
    data = [
        {
            "step": e["step"],
            "path": e["checkpoint_path"],
            "created_at": e["created_at"],
            "checkpoint_type": "Intermediate",
        }
        for e in job.visible_events(state.clock.now())
        if e["type"] == "checkpoint_save"
    ]
    return json_response({"data": data})


async def cancel(state: SimulatorState, request: Request) -> Response:
    job = state.finetunes.jobs.get(request.params[0])
    if job is None:
        return _not_found(request.params[0])
    now = state.clock.now()
    status = job.status_at(now)
    if status in TERMINAL or status == "cancel_requested":
        return _bad(f"Fine-tune job {job.id} cannot be cancelled in status {status}")
    job.events = [pair for pair in job.events if pair[0] <= now]
    job.events.append(_event(now, "cancel_requested", "Job cancellation requested", job))
    stopped = now + CANCEL_S / job.speed
    job.events.append(_event(stopped, "job_stopped", f"Job stopped at {iso(stopped)}", job))
    job.stop_at, job.stop_status = now, "cancel"
    return json_response(job.to_json(now, full=False))


async def delete(state: SimulatorState, request: Request) -> Response:
    job = state.finetunes.jobs.pop(request.params[0], None)
    if job is None:
        return _not_found(request.params[0])
    return json_response({"message": f"Fine-tune job {job.id} deleted"})


async def limits(state: SimulatorState, request: Request) -> Response:
    name = request.query().get("model_name", "")
    model = catalog.get(name)
    if model is None or not model.finetunable:
        return _bad(f"Model {name} is not available for fine-tuning.", "model_name")
    return json_response(model_limits(model))


async def estimate_price(state: SimulatorState, request: Request) -> Response:
    body = request.json()
    training = state.files.get(str(body.get("training_file") or ""))
    if training is None:
        return json_response(
            {"estimation_available": False, "unavailable_reason": "train_file_not_validated"}
        )
    model = catalog.get(body.get("model") or "")
    tokens = sum(
        inference.count_tokens(line) for line in training.data.decode("utf-8", "replace").splitlines()
    )
    epochs = int(body.get("n_epochs") or 1)
    price = tokens * epochs * (model.finetune_price if model else 0.48) / 1_000_000
    return json_response(
        {
            "estimation_available": True,
            "allowed_to_proceed": state.has_credit(),
            "estimated_total_price": round(price, 6),
            "estimated_train_token_count": tokens * epochs,
            "estimated_eval_token_count": 0,
            "user_limit": 100.0,
        }
    )
