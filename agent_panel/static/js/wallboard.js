// The wallboard: tiles per queue, the agents' states and the by-hour chart, refreshed from the panel
// WebSocket's `wallboard` frames (and the board in a `resync`). Waiting times and state durations tick
// here every second from the entry / since times, so the server sends frames only when something changed.
import { PanelSocket } from "./socket.js";

const config = JSON.parse(document.getElementById("wallboard-config").textContent);
const S = config.strings;
const $ = (id) => document.getElementById(id);
let board = config.board;
// The agents this screen may see, by endpoint: from the page and each resync (board.agents), then
// kept current by the hub's `team_state` frames (wallboard frames carry only the queues' figures).
const agents = new Map();
let chart = null;
// Server clock minus ours: durations are computed on the server's epoch, whatever this screen's clock says.
let skew = 0;
window.wallboard = { frames: 0, get board() { return board; }, agents };

const duration = (seconds) => {
  if (seconds === null || seconds === undefined) return S.none;
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
};
const pct = (v) => (v === null || v === undefined ? S.none : `${v.toFixed(1)}%`);
const now = () => Date.now() / 1000 + skew;

function setKpi(card, key, text, cls) {
  const el = card.querySelector(`[data-kpi="${key}"]`);
  if (!el) return;
  el.textContent = text;
  if (cls !== undefined) el.className = `v ${cls}`;
}

function renderQueues() {
  for (const card of document.querySelectorAll(".wb-queue")) {
    const q = board.queues[card.dataset.queue];
    if (!q) continue;
    for (const key of ["offered", "answered", "abandoned", "timed_out", "waiting"]) setKpi(card, key, String(q[key]));
    const slClass = q.service_level === null ? "" : q.service_level >= 80 ? "good" : q.service_level >= 60 ? "warn" : "bad";
    setKpi(card, "service_level", pct(q.service_level), slClass);
    setKpi(card, "abandon_rate", pct(q.abandon_rate));
    setKpi(card, "asa", duration(q.asa));
    setKpi(card, "aht", duration(q.aht));
    for (const el of card.querySelectorAll("[data-agents]")) el.textContent = String(q.agents[el.dataset.agents] || 0);
    const reasons = Object.entries(q.agents.pause_reasons || {}).map(([r, n]) => `${config.pause_reasons[r] || r} ${n}`);
    setKpi(card, "pause_reasons", reasons.join(" · "));
  }
  tick();
}

const WRAPUP_REASON = "wrap-up";

// A `team_state` frame (the hub's agent_state_data): the wallboard shows a wrap-up hold as wrap-up,
// and a state's duration runs on while only other details (queues, availability) change.
function upsertAgent(d) {
  const state = d.state === "paused" && d.pause_reason === WRAPUP_REASON ? "wrap_up" : d.state;
  const old = agents.get(d.agent);
  agents.set(d.agent, {
    agent: d.agent,
    name: d.name,
    state,
    since: old && old.state === state ? old.since : d.at,
    pause_reason: state === "paused" ? d.pause_reason : null,
    queues: d.queues,
    available: d.available,
  });
}

function renderAgents() {
  const list = [...agents.values()].sort((x, y) => (x.agent < y.agent ? -1 : x.agent > y.agent ? 1 : 0));
  const rows = list.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.agent = a.agent;
    tr.dataset.since = a.since;
    const cells = [
      a.name ? `${a.name} (${a.agent})` : a.agent,
      S[a.state] || a.state,
      "",
      a.pause_reason ? config.pause_reasons[a.pause_reason] || a.pause_reason : "",
      a.queues.map((q) => config.queue_names[q] || q).join(", "),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 1) {
        const badge = document.createElement("span");
        badge.className = `state ${a.state}`;
        badge.textContent = text;
        td.append(badge);
      } else {
        td.textContent = text;
      }
      if (i === 2) td.className = "since";
      tr.append(td);
    });
    return tr;
  });
  $("wb-agent-rows").replaceChildren(...rows);
  tick();
}

// Longest wait and state durations move every second without a frame.
function tick() {
  const t = now();
  for (const card of document.querySelectorAll(".wb-queue")) {
    const q = board.queues[card.dataset.queue];
    if (!q) continue;
    const oldest = q.waiting_since.length ? q.waiting_since[0] : null;
    const wait = oldest === null ? null : t - oldest;
    setKpi(card, "longest_wait", oldest === null ? S.none : duration(wait), wait !== null && wait > q.service_level_seconds ? "bad" : "");
  }
  for (const tr of document.querySelectorAll("#wb-agent-rows tr")) {
    tr.querySelector(".since").textContent = duration(t - Number(tr.dataset.since));
  }
}

function renderChart() {
  const name = $("wb-chart-queue").value || Object.keys(board.queues)[0];
  const q = board.queues[name];
  if (!q || typeof window.Chart === "undefined") return;
  const h = q.by_hour;
  const labels = board.hours.map((hour) => `${String(hour).padStart(2, "0")}:00`);
  const data = {
    labels,
    datasets: [
      { type: "bar", label: S.offered, data: h.offered, backgroundColor: "#90caf9", yAxisID: "calls", order: 1 },
      { type: "bar", label: S.answered, data: h.answered, backgroundColor: "#1a7f37", yAxisID: "calls", order: 1 },
      { type: "bar", label: S.abandoned, data: h.abandoned, backgroundColor: "#c62828", yAxisID: "calls", order: 1 },
      {
        type: "line", label: S.service_level, data: h.service_level, yAxisID: "sl", spanGaps: true,
        borderColor: "#b26a00", backgroundColor: "#b26a00", borderWidth: 2, pointRadius: 4, order: 0,
      },
    ],
  };
  if (chart) {
    chart.data = data;
    chart.update("none");
    return;
  }
  chart = new window.Chart($("wb-chart"), {
    data,
    options: {
      animation: false,
      responsive: true,
      scales: {
        calls: { type: "linear", position: "left", beginAtZero: true, ticks: { precision: 0 } },
        sl: { type: "linear", position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } },
      },
    },
  });
}

function apply(next) {
  if (!next) return;
  board = next;
  skew = board.at - Date.now() / 1000;
  $("wb-day").textContent = board.day;
  if (Array.isArray(board.agents)) {
    agents.clear();
    for (const a of board.agents) agents.set(a.agent, a);
    renderAgents();
  }
  renderQueues();
  renderChart();
}

new PanelSocket(
  (frame) => {
    if (frame.type === "wallboard") {
      window.wallboard.frames += 1;
      apply(frame.data);
    } else if (frame.type === "resync") {
      apply(frame.data.wallboard);
    } else if (frame.type === "team_state") {
      upsertAgent(frame.data);
      renderAgents();
    }
  },
  (status) => { $("wb-live").dataset.state = status; },
);
$("wb-chart-queue").addEventListener("change", renderChart);
// chart.js is a deferred classic script: it is there by the time the page has loaded.
window.addEventListener("load", renderChart);
setInterval(tick, 1000);
apply(board);
