// ecomstream dashboard: polls /api/snapshot and redraws in place. No build step, no framework.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh_ms")) || 3000;
const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#ea580c", "#475569", "#0d9488", "#a16207"];
const charts = {};
let lastGood = null;

function el(id) { return document.getElementById(id); }
function num(text) { return Number.parseFloat(text); }
function fmtInt(n) { return Number(n).toLocaleString("en-US"); }
function fmtMoney(text) { return text; } // exact decimal text from gold, never re-rounded
function hhmmss(iso) { return iso ? iso.slice(11, 19) : ""; }
function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (Math.abs(s) < 120) return s.toFixed(1) + " s";
  if (Math.abs(s) < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function chart(id, config) {
  if (!charts[id]) {
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false },
      config.options || {});
    charts[id] = new Chart(el(id), config);
  }
  return charts[id];
}

function setData(c, labels, datasets) {
  c.data.labels = labels;
  datasets.forEach((d, i) => {
    if (c.data.datasets[i]) Object.assign(c.data.datasets[i], d); else c.data.datasets.push(d);
  });
  c.data.datasets.length = datasets.length;
  c.update("none");
}

function color(i) { return PALETTE[i % PALETTE.length]; }

function rows(tbody, items, cells) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const [key, text] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      td.dataset.key = key;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function render(s) {
  const t = s.totals;
  el("kpi-orders").textContent = fmtInt(t.orders);
  el("kpi-revenue").textContent = fmtMoney(t.revenue);
  el("kpi-aov").textContent = fmtMoney(t.avg_order_value);
  el("kpi-units").textContent = fmtInt(t.units);
  el("kpi-freshness").textContent = fmtSeconds(s.status.freshness_s);
  el("kpi-lag").textContent = s.status.kafka_lag === null ? "–" : fmtInt(s.status.kafka_lag);
  el("kpi-layers").textContent = fmtInt(s.status.bronze_total) + " / " + fmtInt(s.status.silver_total);
  el("kpi-bad").textContent = fmtInt(s.status.quarantine_total) + " / " + fmtInt(s.status.duplicates_dropped);

  const kpis = el("kpis");
  kpis.dataset.versions = JSON.stringify(s.versions);
  kpis.dataset.orders = String(t.orders);
  kpis.dataset.revenue = t.revenue;
  kpis.dataset.aov = t.avg_order_value;
  kpis.dataset.units = String(t.units);

  rows(el("categories").tBodies[0], s.categories, (c) => [
    ["category", c.category], ["orders", fmtInt(c.orders)], ["units", fmtInt(c.units)],
    ["revenue", fmtMoney(c.revenue)], ["avg_order_value", fmtMoney(c.avg_order_value)]]);
  rows(el("locations").tBodies[0], s.top_locations, (l) => [
    ["country", l.country], ["city", l.city], ["orders", fmtInt(l.orders)],
    ["revenue", fmtMoney(l.revenue)]]);
  const layers = Object.values(s.status.layers);
  rows(el("layers").tBodies[0], layers, (l) => [
    ["query", l.query], ["rows_per_s", l.rows_per_s === null ? "–" : l.rows_per_s.toFixed(1)],
    ["input_total", fmtInt(l.input_total)], ["batches", fmtInt(l.batches)],
    ["last_batch_ms", l.last_batch_ms === null ? "–" : l.last_batch_ms + " ms"]]);
  el("versions").textContent = "Delta versions: category_sales " + s.versions.category_sales +
    ", location_sales " + s.versions.location_sales + ", metrics " + s.versions.metrics +
    " · built in " + s.build_ms + " ms · " + s.data_dir;

  const w = s.windows;
  const labels = w.labels.map(hhmmss);
  setData(chart("chart-revenue", { type: "bar", data: { labels: [], datasets: [] },
    options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "revenue" } } } } }),
    labels, Object.entries(w.revenue_by_category).map(([name, values], i) => (
      { label: name, data: values.map(num), backgroundColor: color(i) })));
  setData(chart("chart-orders", { type: "bar", data: { labels: [], datasets: [] },
    options: { scales: { y: { title: { display: true, text: "orders" } },
      y1: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "avg order value" } } } } }),
    labels, [
      { type: "bar", label: "orders", data: w.orders, backgroundColor: color(0), yAxisID: "y" },
      { type: "line", label: "avg order value", data: w.avg_order_value.map(num), borderColor: color(3),
        backgroundColor: color(3), yAxisID: "y1" }]);
  setData(chart("chart-locations", { type: "bar", data: { labels: [], datasets: [] },
    options: { indexAxis: "y", plugins: { legend: { display: false } } } }),
    s.top_locations.map((l) => l.city + ", " + l.country),
    [{ label: "revenue", data: s.top_locations.map((l) => num(l.revenue)), backgroundColor: color(5) }]);
  const o = s.over_time;
  const tlabels = o.labels.map(hhmmss);
  setData(chart("chart-quarantine", { type: "bar", data: { labels: [], datasets: [] },
    options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "records" } } } } }),
    tlabels, Object.entries(o.quarantine).map(([name, values], i) => (
      { label: name, data: values, backgroundColor: color(i + 3) })));
  setData(chart("chart-throughput", { type: "line", data: { labels: [], datasets: [] },
    options: { scales: { y: { title: { display: true, text: "rows/s" } } } } }),
    tlabels, Object.entries(o.throughput).map(([name, values], i) => (
      { label: name, data: values, borderColor: color(i), backgroundColor: color(i) })));

  const state = el("state");
  const last = Object.values(s.status.layers).map((l) => l.last_batch_at).filter(Boolean).sort().pop();
  const age = last ? (Date.now() - Date.parse(last)) / 1000 : null;
  state.className = "pill " + (age !== null && age < 60 ? "live" : "idle");
  state.textContent = last ? "last batch " + fmtSeconds(age) + " ago" : "waiting for the pipeline's first batch";
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

async function refresh() {
  try {
    const response = await fetch("/api/snapshot", { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    lastGood = body;
    el("error").hidden = true;
    render(body);
  } catch (err) {
    el("error").textContent = "Cannot load the tables: " + err.message +
      (lastGood ? " (showing the last good snapshot)" : "");
    el("error").hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
