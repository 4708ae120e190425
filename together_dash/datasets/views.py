"""The dataset validator's pages: upload, recent validations, one validation's progress and result."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from together_dash.catalog.services import known_model_ids
from together_dash.core.roles import viewer_required
from together_dash.datasets import services
from together_dash.datasets.forms import DatasetUploadForm
from together_dash.datasets.models import DatasetValidation
from together_dash.datasets.tasks import validate_dataset_upload

RECENT = 20


@viewer_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    """The upload form and the latest validations; small files are validated before the redirect."""
    form = DatasetUploadForm(request.POST, request.FILES) if request.method == "POST" else DatasetUploadForm()
    if form.is_bound and form.is_valid():
        validation = services.store_upload(
            form.cleaned_data["file"],
            user=request.user,
            purpose=form.cleaned_data["purpose"],
            model_id=form.cleaned_data["model"],
        )
        if services.validates_inline(validation):
            services.run_validation(validation.id)
        else:
            validate_dataset_upload.delay_on_commit(validation.id)
        return redirect("datasets-detail", validation_id=validation.id)
    context = {
        "form": form,
        "recent": DatasetValidation.objects.select_related("created_by")[:RECENT],
        "model_ids": known_model_ids(),
        "upload_max_bytes": services.upload_max_bytes(),
    }
    return render(request, "datasets/dataset_list.html", context)


@require_GET
@viewer_required
def dataset_detail(request: HttpRequest, validation_id: int) -> HttpResponse:
    """One validation: progress while it runs, then the verdict and every problem with its line."""
    validation = get_object_or_404(DatasetValidation, id=validation_id)
    return render(request, "datasets/dataset_detail.html", {"validation": validation})


@require_GET
@never_cache
@viewer_required
def dataset_progress(request: HttpRequest, validation_id: int) -> JsonResponse:
    """Status and percent read, for the detail page to poll."""
    validation = get_object_or_404(DatasetValidation, id=validation_id)
    return JsonResponse(validation.progress_json())
