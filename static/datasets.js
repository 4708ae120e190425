// Dataset validator: polls the progress endpoint while a validation runs, then reloads to show the result.
(function () {
  "use strict";
  const card = document.getElementById("dataset-progress");
  if (!card) return;
  const bar = card.querySelector("progress");
  const label = card.querySelector(".progress-label");
  async function poll() {
    try {
      const response = await fetch(card.dataset.url, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const state = await response.json();
        bar.value = state.progress;
        label.textContent = state.progress + "%";
        if (state.finished) { window.location.reload(); return; }
      }
    } catch (error) { /* a network blip: try again on the next tick */ }
    window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
})();
