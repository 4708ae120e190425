"""Fine-tune jobs (list and one job's event timeline) and batches with the remainder download."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.jobs.models import BatchJob, FineTuneJob, remainder_dir
from together_dash.together.types import BatchStatus, FineTuneStatus

PAGE_SIZE = 50


@require_GET
@viewer_required
def finetune_list(request: HttpRequest) -> HttpResponse:
    """Every fine-tune job, newest first, with its progress; filterable by status."""
    status = request.GET.get("status")
    status = status if status in FineTuneStatus.ALL else None
    jobs = FineTuneJob.objects.select_related("upstream_key")
    if status:
        jobs = jobs.filter(status=status)
    context = {
        "page": Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page")),
        "status": status,
        "statuses": FineTuneStatus.ALL,
    }
    return render(request, "dashboard/finetunes.html", context)


@require_GET
@viewer_required
def finetune_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job: its details, progress and event timeline."""
    job = get_object_or_404(FineTuneJob.objects.select_related("upstream_key"), job_id=job_id)
    events, events_capped = queries.finetune_events(job)
    context = {"job": job, "events": events, "events_capped": events_capped, "event_cap": queries.EVENT_CAP}
    return render(request, "dashboard/finetune_detail.html", context)


@require_GET
@viewer_required
def batch_list(request: HttpRequest) -> HttpResponse:
    """Every batch, newest first, with progress, failures and the remainder to resubmit."""
    status = request.GET.get("status")
    status = status if status in BatchStatus.ALL else None
    context = {
        "page": Paginator(queries.batch_jobs(status), PAGE_SIZE).get_page(request.GET.get("page")),
        "status": status,
        "statuses": BatchStatus.ALL,
    }
    return render(request, "dashboard/batches.html", context)


@require_GET
@viewer_required
def batch_remainder(request: HttpRequest, batch_id: str) -> FileResponse:
    """The stored JSONL of a batch's requests that got no output, ready to resubmit."""
    batch = get_object_or_404(BatchJob, batch_id=batch_id)
    path = batch.remainder_path
    # The file name comes from the database; never serve anything outside the remainder folder.
    if path is None or path.resolve().parent != remainder_dir().resolve() or not path.is_file():
        raise Http404("This batch has no stored remainder.")
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=f"{batch.batch_id}-remainder.jsonl",
        content_type="application/jsonl",
    )
