// The dashboard's charts and live refresh. Plain JavaScript over Chart.js (served from npm by staticfiles).
//
// Pages with <form data-live> (overview, key usage) fetch their chart data from the small JSON
// endpoints named in the #td-config json_script, redraw with chart.update(), and swap the server-rendered
// sections marked [data-refresh] from a fresh copy of the page: on load, on every filter change, and
// every 30 seconds. The URL is kept in step (history.replaceState) so it can be shared.
// Pages with a chart drawn once (an error's occurrences, billing) read it from json_script.
// Chart instances are on window.tdCharts and the last payloads on window.tdData, for tests and debugging.
(function () {
  "use strict";

  const configNode = document.getElementById("td-config");
  const config = configNode ? JSON.parse(configNode.textContent) : { charts: {}, refreshSeconds: 30, timeZone: "UTC" };
  const charts = (window.tdCharts = window.tdCharts || {});
  const data = (window.tdData = window.tdData || {});
  window.tdLoads = 0;

  // ---- custom range fields ------------------------------------------------------------------------

  function syncCustomRange(select) {
    const custom = select.form && select.form.querySelector("[data-custom-range]");
    if (custom) custom.hidden = select.value !== "custom";
  }

  document.querySelectorAll("[data-range-select]").forEach(function (select) {
    select.addEventListener("change", function () { syncCustomRange(select); });
  });

  if (typeof Chart === "undefined") {
    // Only pages without charts get here legitimately; the others say why their charts are missing.
    document.querySelectorAll("[data-chart-box]").forEach(function (box) {
      box.textContent = "Charts could not load (static files missing: run manage.py collectstatic).";
    });
    return;
  }

  // ---- labels and shared options ------------------------------------------------------------------

  Chart.defaults.color = "#374151";
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  function timeFormatter(bucketSeconds, count) {
    const spansDays = bucketSeconds * count > 86400;
    const options = spansDays
      ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
      : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    return new Intl.DateTimeFormat(undefined, Object.assign({ timeZone: config.timeZone }, options));
  }

  function timeLabels(payload) {
    const format = timeFormatter(payload.bucketSeconds, payload.buckets.length);
    return payload.buckets.map(function (iso) { return format.format(new Date(iso)); });
  }

  function axisTitle(text) { return { display: true, text: text }; }

  function timeScale(payload) {
    const size = payload.bucketSeconds >= 3600 ? payload.bucketSeconds / 3600 + " h" : payload.bucketSeconds / 60 + " min";
    return { title: axisTitle("Time (" + config.timeZone + ", buckets of " + size + ")"), ticks: { maxRotation: 0, autoSkipPadding: 12 } };
  }

  // ---- one builder per chart: empty chart first, then apply(payload) ------------------------------

  let quotaBars = [];  // the bars last drawn, for their full labels in tooltips

  const builders = {
    categories: {
      source: "categories",
      create: function (canvas) {
        return new Chart(canvas, {
          type: "bar",
          data: { labels: [], datasets: [] },
          options: {
            interaction: { mode: "index", intersect: false },
            scales: {
              x: { stacked: true },
              y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: axisTitle("Errors") },
            },
            plugins: { legend: { position: "bottom" } },
          },
        });
      },
      apply: function (chart, payload) {
        chart.data.labels = timeLabels(payload);
        chart.data.datasets = payload.datasets.map(function (set) {
          return { label: set.label, category: set.category, data: set.data, backgroundColor: set.color, borderWidth: 0, maxBarThickness: 40 };
        });
        chart.options.scales.x = Object.assign({ stacked: true }, timeScale(payload));
      },
      isEmpty: function (payload) { return payload.total === 0; },
    },
    volume: {
      source: "volume",
      create: function (canvas) {
        return new Chart(canvas, {
          type: "line",
          data: { labels: [], datasets: [] },
          options: {
            interaction: { mode: "index", intersect: false },
            scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: axisTitle("Requests") } },
            plugins: { legend: { position: "bottom" } },
          },
        });
      },
      apply: function (chart, payload) {
        chart.data.labels = timeLabels(payload);
        chart.data.datasets = payload.datasets.map(function (set) {
          return { label: set.label, name: set.name, data: set.data, borderColor: set.color, backgroundColor: set.color, pointRadius: 0, borderWidth: 2, tension: 0.2 };
        });
        chart.options.scales.x = timeScale(payload);
      },
      isEmpty: function (payload) { return payload.total === 0; },
    },
    quota: {
      source: "quota",
      create: function (canvas) {
        return new Chart(canvas, {
          type: "bar",
          data: { labels: [], datasets: [] },
          options: {
            indexAxis: "y",
            scales: { x: { min: 0, max: 100, title: axisTitle("% of the rate limit left (latest)") } },
            plugins: {
              legend: { display: false },
              tooltip: {
                callbacks: {
                  title: function (items) { return quotaBars[items[0].dataIndex].label; },
                  label: function (item) { return item.raw + "% left (" + quotaBars[item.dataIndex].level + ")"; },
                },
              },
            },
          },
        });
      },
      apply: function (chart, payload) {
        quotaBars = payload.bars;
        chart.data.labels = payload.bars.map(function (bar) { return bar.shortLabel; });
        chart.data.datasets = [{
          label: "Headroom",
          data: payload.bars.map(function (bar) { return bar.headroomPct; }),
          backgroundColor: payload.bars.map(function (bar) { return bar.color; }),
        }];
        // Tall enough for every bar to keep a readable label, on a phone too.
        chart.canvas.parentNode.style.height = Math.max(120, 34 * payload.bars.length + 60) + "px";
        showWarnings(payload.warnings);
      },
      isEmpty: function (payload) { return payload.bars.length === 0; },
    },
    quotaTrend: {
      source: "quota",
      create: function (canvas) {
        return new Chart(canvas, {
          type: "line",
          data: { labels: [], datasets: [] },
          options: {
            interaction: { mode: "nearest", axis: "x", intersect: false },
            scales: { y: { min: 0, max: 100, title: axisTitle("% left (lowest per bucket)") } },
            plugins: { legend: { position: "bottom" } },
          },
        });
      },
      apply: function (chart, payload) {
        chart.data.labels = timeLabels(payload.trend);
        chart.data.datasets = payload.trend.datasets.map(function (set) {
          // Points stay visible: a series may have a single snapshot in the range.
          return { label: set.label, data: set.data, borderColor: set.color, backgroundColor: set.color, pointRadius: 2, borderWidth: 2, spanGaps: true };
        });
        chart.options.scales.x = timeScale(payload.trend);
        showWarnings(payload.warnings);
      },
      isEmpty: function (payload) { return payload.bars.length === 0; },
    },
    finetunes: {
      source: "finetunes",
      create: function (canvas) {
        return new Chart(canvas, {
          type: "bar",
          data: { labels: [], datasets: [] },
          options: {
            scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: axisTitle("Jobs") } },
            plugins: { legend: { display: false } },
          },
        });
      },
      apply: function (chart, payload) {
        chart.data.labels = payload.statuses;
        chart.data.datasets = [{ label: "Jobs", data: payload.counts, backgroundColor: payload.colors, maxBarThickness: 56 }];
      },
      isEmpty: function (payload) { return payload.total === 0; },
    },
  };

  function showWarnings(warnings) {
    const list = document.getElementById("quota-warnings");
    if (!list) return;
    list.replaceChildren.apply(list, warnings.map(function (text) {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
  }

  function toggleEmpty(source, empty) {
    document.querySelectorAll('[data-chart-box="' + source + '"]').forEach(function (box) { box.hidden = empty; });
    document.querySelectorAll('[data-empty-for="' + source + '"]').forEach(function (note) { note.hidden = !empty; });
  }

  // ---- live pages ---------------------------------------------------------------------------------

  const form = document.querySelector("form[data-live]");
  const status = document.getElementById("refresh-status");
  let generation = 0;

  function say(text, isError) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function currentQuery() {
    const params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (String(value).trim() !== "") params.append(name, String(value).trim());
    });
    if (params.get("range") !== "custom") {
      params.delete("start");
      params.delete("end");
    }
    return params.toString();
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) throw new Error("Your session has ended: reload the page to log in again.");
        if (!response.ok) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            throw new Error(body.detail || "The server answered HTTP " + response.status + ".");
          });
        }
        return response.json();
      });
  }

  function loadCharts(query, mine) {
    const sources = {};
    Object.keys(charts).forEach(function (name) {
      if (builders[name]) sources[builders[name].source] = true;
    });
    return Promise.all(Object.keys(sources).map(function (source) {
      return getJSON(config.charts[source] + "?" + query).then(function (payload) {
        if (mine !== generation) return;  // a newer refresh has started: its data wins
        data[source] = payload;
        Object.keys(charts).forEach(function (name) {
          const builder = builders[name];
          if (!builder || builder.source !== source) return;
          builder.apply(charts[name], payload);
          charts[name].update();
          toggleEmpty(source, builder.isEmpty(payload));
        });
      });
    }));
  }

  function refreshSections(query, mine) {
    return fetch(window.location.pathname + "?" + query, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/accounts/login/") !== -1) {
          throw new Error("Your session has ended: reload the page to log in again.");
        }
        if (!response.ok) throw new Error("The server answered HTTP " + response.status + ".");
        return response.text();
      })
      .then(function (html) {
        if (mine !== generation) return;
        const fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh][id]").forEach(function (section) {
          const replacement = fresh.getElementById(section.id);
          if (replacement) section.replaceWith(document.importNode(replacement, true));
        });
      });
  }

  function refresh() {
    const mine = ++generation;
    const query = currentQuery();
    say("Updating…");
    return Promise.all([loadCharts(query, mine), refreshSections(query, mine)])
      .then(function () {
        if (mine !== generation) return;
        window.tdLoads += 1;
        say("Updated " + new Date().toLocaleTimeString() + "; refreshes every " + config.refreshSeconds + " s.");
      })
      .catch(function (problem) {
        if (mine !== generation) return;
        say("Could not update: " + problem.message + " Retrying in " + config.refreshSeconds + " s.", true);
      });
  }

  function filtersChanged(event) {
    if (event) event.preventDefault();
    const query = currentQuery();
    window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
    refresh();
  }

  if (form) {
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      const name = canvas.dataset.chart;
      if (builders[name]) charts[name] = builders[name].create(canvas);
    });
    form.addEventListener("submit", filtersChanged);
    form.addEventListener("change", function (event) {
      // Picking "custom" waits for the dates; everything else applies at once.
      if (event.target.name === "range" && event.target.value === "custom") return;
      filtersChanged(event);
    });
    refresh();
    window.setInterval(function () { if (!document.hidden) refresh(); }, config.refreshSeconds * 1000);
  }

  // ---- charts drawn once from json_script data ----------------------------------------------------

  const occurrences = document.querySelector('canvas[data-static-chart="occurrences"]');
  if (occurrences) {
    const payload = JSON.parse(document.getElementById("occurrences-data").textContent);
    data.occurrences = payload;
    charts.occurrences = new Chart(occurrences, {
      type: "bar",
      data: { labels: timeLabels(payload), datasets: [{ label: payload.label, data: payload.counts, backgroundColor: payload.color }] },
      options: {
        scales: { x: timeScale(payload), y: { beginAtZero: true, ticks: { precision: 0 }, title: axisTitle("Occurrences") } },
        plugins: { legend: { display: false } },
      },
    });
  }

  // Billing: cost billed by Together against cost observed, per window (billed is null until reported).
  const billing = document.querySelector('canvas[data-static-chart="billing"]');
  if (billing) {
    const payload = JSON.parse(document.getElementById("billing-data").textContent);
    const amounts = function (values) { return values.map(function (v) { return v === null ? null : Number(v); }); };
    data.billing = payload;
    charts.billing = new Chart(billing, {
      type: "bar",
      data: {
        labels: timeLabels(payload),
        datasets: [
          { label: "Billed by Together", name: "billed", data: amounts(payload.billed), backgroundColor: payload.billedColor, borderWidth: 0, maxBarThickness: 28 },
          { label: "Observed (proxy and ingest)", name: "observed", data: amounts(payload.observed), backgroundColor: payload.observedColor, borderWidth: 0, maxBarThickness: 28 },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: timeScale(payload),
          y: {
            beginAtZero: true,
            title: axisTitle("Cost (USD)"),
            ticks: { callback: function (value) { return "$" + Number(value).toLocaleString(undefined, { maximumSignificantDigits: 3 }); } },
          },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              label: function (item) {
                return item.dataset.label + ": " + (item.raw === null ? "not billed yet" : "$" + item.raw.toFixed(6));
              },
            },
          },
        },
      },
    });
  }
})();
