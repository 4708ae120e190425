"""The dataset upload form."""
from __future__ import annotations

from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat

from together_dash.datasets.services import upload_max_bytes
from together_dash.together.datasets import FINE_TUNE, PURPOSES


class DatasetUploadForm(forms.Form):
    file = forms.FileField(label="Dataset file", help_text="JSONL, one sample per line.")
    model = forms.CharField(
        label="Model",
        required=False,
        max_length=255,
        help_text="Optional: warns about samples longer than this model's context length.",
    )
    purpose = forms.ChoiceField(
        choices=[(purpose, purpose) for purpose in PURPOSES], initial=FINE_TUNE, required=False
    )

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        limit = upload_max_bytes()
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; "
                f"uploads here take at most {filesizeformat(limit)}. "
                "Run `python manage.py validate_dataset FILE` for larger files."
            )
        return upload

    def clean_model(self) -> str:
        return self.cleaned_data["model"].strip()

    def clean_purpose(self) -> str:
        return self.cleaned_data["purpose"] or FINE_TUNE
