// Draws the overview charts from data the page embeds with json_script.
(function () {
  "use strict";
  const canvas = document.getElementById("category-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const data = JSON.parse(document.getElementById("category-data").textContent);
  window.categoryChart = new Chart(canvas, {
    type: "bar",
    data: { labels: data.labels, datasets: [{ label: "Errors", data: data.values, backgroundColor: "#c2410c" }] },
    options: { responsive: true, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
})();
