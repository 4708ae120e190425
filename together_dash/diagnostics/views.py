"""The diagnostics page: the preflight check, and the debug bundle download for key admins."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from together_dash.catalog.services import known_model_ids
from together_dash.core.roles import is_key_admin, key_admin_required, viewer_required
from together_dash.diagnostics.bundle import build_bundle, bundle_filename
from together_dash.diagnostics.preflight import PreflightInputError, PreflightResult, check


class PreflightForm(forms.Form):
    model = forms.CharField(max_length=255)
    max_tokens = forms.IntegerField(min_value=1, initial=512)
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), required=False, strip=False)
    messages = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        help_text='Chat messages as JSON, e.g. [{"role": "user", "content": "Hi"}]; or fill in the prompt.',
    )

    def clean_messages(self) -> Any:
        text = self.cleaned_data["messages"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None

    def run(self) -> PreflightResult | None:
        """The preflight result, or None with the input problem added to the form's errors."""
        data = self.cleaned_data
        # An empty textarea means "not given", so that neither field filled in is reported as such.
        prompt = data["prompt"] or None
        try:
            return check(data["model"], data["max_tokens"], messages=data["messages"], prompt=prompt)
        except PreflightInputError as exc:
            self.add_error(None, str(exc))
            return None


@require_http_methods(["GET", "POST"])
@viewer_required
def preflight(request: HttpRequest) -> HttpResponse:
    """The form, and below it the verdict with the numbers behind it."""
    form = PreflightForm(request.POST) if request.method == "POST" else PreflightForm()
    result = form.run() if form.is_bound and form.is_valid() else None
    context = {
        "form": form,
        "result": result,
        "model_ids": known_model_ids(),
        "can_download_bundle": is_key_admin(request.user),
    }
    return render(
        request, "diagnostics/preflight.html", context, status=200 if result or not form.is_bound else 422
    )


@require_POST
@key_admin_required
def debug_bundle(request: HttpRequest) -> HttpResponse:
    """Build the redacted debug bundle now and download it (POST: it calls Together to check connectivity)."""
    include_bodies = request.POST.get("include_bodies") == "on"
    response = HttpResponse(build_bundle(include_bodies=include_bodies), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{bundle_filename()}"'
    return response
