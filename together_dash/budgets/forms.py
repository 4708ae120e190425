"""The budget form of /budgets/: one scope field filled, thresholds as "80, 100"."""
from __future__ import annotations

from django import forms

from together_dash.budgets.models import Budget, clean_thresholds
from together_dash.keys.models import AppKey, TogetherKey


class BudgetForm(forms.ModelForm):
    thresholds = forms.CharField(
        initial="80, 100",
        max_length=200,
        help_text="Percentages of the amount that alert, once each per period, e.g. 50, 80, 100.",
    )

    class Meta:
        model = Budget
        fields = ["name", "scope", "app_key", "upstream_key", "model", "project", "period", "amount_usd",
                  "thresholds", "enforce"]
        labels = {"amount_usd": "Amount (USD)", "enforce": "Enforce at the proxy (app-key budgets only)"}
        help_texts = {
            "app_key": "For an app-key budget.",
            "upstream_key": "For an upstream-key budget.",
            "model": "For a model budget: the model id as requested.",
            "enforce": "Over the amount, the proxy answers the app key's requests with HTTP 429 until the"
            " period resets.",
        }

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app_key"].queryset = AppKey.objects.filter(status=AppKey.Status.ACTIVE).order_by("name")
        self.fields["upstream_key"].queryset = TogetherKey.objects.order_by("name")
        self.fields["amount_usd"].widget.attrs.update({"step": "any", "min": "0"})
        if self.instance.pk and isinstance(self.instance.thresholds, list):
            self.initial["thresholds"] = ", ".join(str(t) for t in self.instance.thresholds)

    def clean_thresholds(self) -> list[int]:
        return clean_thresholds(self.cleaned_data["thresholds"])


class DeleteBudgetForm(forms.Form):
    confirm = forms.BooleanField(
        required=True, label="Delete this budget (its past alerts stay in the history)."
    )
