// The agent workspace: softphone controls, live frames from /ws (screen pop, state, queues, banner),
// and the wrap-up form after each call.
import { api, fire, formData, toast } from "./common.js";
import { PanelSocket } from "./socket.js";
import { Softphone } from "./softphone.js";

const config = JSON.parse(document.getElementById("panel-config").textContent);
const S = config.strings;
const lang = document.body.dataset.lang;
const $ = (id) => document.getElementById(id);
const state = { call: null, memberId: null, wrapupTimer: null, waitTimer: null };

// ------------------------------------------------------------------ softphone
const phone = new Softphone($("remote-audio"));
window.panel = { phone, state, frames: [], pops: [] };

function setCallButtons(mode) {
  const inCall = mode === "in_call";
  $("btn-answer").disabled = mode !== "incoming";
  $("btn-hangup").disabled = mode === "idle";
  for (const id of ["btn-hold", "btn-mute", "btn-pci", "btn-blind", "btn-attended"]) $(id).disabled = !inCall;
  for (const b of document.querySelectorAll("#keypad button")) b.disabled = !inCall;
}
setCallButtons("idle");

phone.addEventListener("status", (e) => {
  const el = $("sip-status");
  const status = e.detail.status;
  el.textContent = status === "unconfigured" ? S.no_phone : S[status] || status;
  el.className = `status ${status === "registered" ? "on" : "off"}`;
  el.dataset.status = status;
});
phone.addEventListener("incoming", (e) => {
  $("call-info").textContent = `${S.incoming}: ${e.detail.number || ""}`;
  setCallButtons("incoming");
});
phone.addEventListener("confirmed", (e) => {
  if (e.detail.role === "consult") { $("btn-complete").hidden = false; $("btn-complete").disabled = false; return; }
  $("call-info").textContent = S.in_call;
  setCallButtons("in_call");
});
phone.addEventListener("hold", (e) => { $("btn-hold").classList.toggle("on", e.detail.held); });
phone.addEventListener("consult-ended", () => { $("btn-complete").hidden = true; });
phone.addEventListener("ended", () => {
  $("call-info").textContent = S.ended;
  $("btn-complete").hidden = true;
  $("btn-hold").classList.remove("on");
  $("btn-mute").classList.remove("on");
  showPci({ paused: false });
  setCallButtons("idle");
});

$("btn-answer").addEventListener("click", () => phone.answer());
$("btn-hangup").addEventListener("click", () => phone.hangup());
$("btn-hold").addEventListener("click", () => phone.toggleHold());
$("btn-mute").addEventListener("click", () => { $("btn-mute").classList.toggle("on", phone.toggleMute()); });
// PCI pause: the server mutes the recording in Asterisk and marks the span; every tab follows the frame.
function showPci(d) {
  const b = $("btn-pci");
  b.classList.toggle("on", !!d.paused);
  b.textContent = d.paused ? b.dataset.resume : b.dataset.pause;
  document.body.classList.toggle("recording-paused", !!d.paused);
}
$("btn-pci").addEventListener("click", async () => {
  const paused = $("btn-pci").classList.contains("on");
  try {
    showPci(await api("POST", `/api/v1/recording/${paused ? "resume" : "pause"}`, {}));
  } catch (e) {
    toast(e.message, "error");
  }
});
$("keypad").addEventListener("click", (e) => { const t = e.target.dataset.dtmf; if (t) phone.dtmf(t); });
$("btn-blind").addEventListener("click", () => phone.blindTransfer($("transfer-target").value));
$("btn-attended").addEventListener("click", () => phone.startConsult($("transfer-target").value));
$("btn-complete").addEventListener("click", () => phone.completeConsult());
$("dial-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const number = $("dial-number").value.trim();
  if (!number) return;
  try { await api("POST", "/api/v1/dial", { number }); toast(S.calling); } catch (err) { toast(`${S.dial_failed}: ${err.message}`, "error"); }
});

// ------------------------------------------------------------------ agent state
function showState(data) {
  const el = $("agent-state");
  if (!data) { el.textContent = S.logged_out; el.className = "state logged_out"; el.dataset.state = "logged_out"; return; }
  // A queue that requires wrap-up holds the agent paused with reason "wrap-up" until it is saved.
  const st = data.paused && data.pause_reason === "wrap-up" ? "wrap_up" : data.state;
  const label = S[st] || st;
  el.textContent = st === "paused" && data.pause_reason ? `${label} · ${data.pause_reason}` : label;
  el.className = `state ${st}`;
  el.dataset.state = st;
}

async function agentAction(action, body) {
  try { await api("POST", `/api/v1/agent/${action}`, body); } catch (err) { toast(err.message, "error"); }
}
$("btn-login").addEventListener("click", () => agentAction("login"));
$("btn-ready").addEventListener("click", () => agentAction("ready"));
$("btn-pause").addEventListener("click", () => agentAction("pause", { reason: $("pause-reason").value }));
$("btn-logout-queues").addEventListener("click", () => agentAction("logout"));
$("btn-claim-next").addEventListener("click", async () => {
  try { const r = await api("POST", "/api/v1/callbacks/claim-next"); if (r.callback_id) toast(S.claimed); fire("callbacks-changed"); }
  catch (err) { toast(err.message, "error"); }
});

// ------------------------------------------------------------------ screen pop
function showPop(data) {
  const html = (data.html && (data.html[lang] || Object.values(data.html)[0])) || "";
  const pop = $("pop");
  pop.innerHTML = html;
  pop.classList.remove("empty", "ended");
  pop.dataset.linkedid = data.linkedid;
  state.call = data;
  state.memberId = data.member_id || null;
  if (window.htmx) window.htmx.process(pop);
  // For the screen-pop benchmark: when the card was in the DOM (epoch ms, sub-ms precision).
  window.panel.pops.push({ linkedid: data.linkedid, partial: !!data.partial, rendered_at: performance.timeOrigin + performance.now() });
  if (window.panel.pops.length > 1000) window.panel.pops.shift();
  clearInterval(state.waitTimer);
  const since = data.queued_at || data.ringing_at;
  const tick = () => {
    const el = pop.querySelector(".wait-s");
    if (el) el.textContent = Math.max(0, Math.round(Date.now() / 1000 - since));
  };
  tick();
  state.waitTimer = setInterval(tick, 1000);
  const form = pop.querySelector("#new-member-form");
  if (form) form.addEventListener("submit", createMember);
}

async function createMember(e) {
  e.preventDefault();
  const form = e.target;
  const error = form.querySelector(".error");
  const body = formData(form);
  body.source = "phone";
  try {
    const created = await api("POST", "/api/v1/members", body);
    state.memberId = created.member_id;
    window.htmx.ajax("GET", `/partials/member/${created.member_id}`, { target: "#pop-member", swap: "innerHTML" });
  } catch (err) {
    error.textContent = err.details ? err.details.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ") : err.message;
    error.hidden = false;
  }
}

document.body.addEventListener("htmx:afterSwap", (e) => {
  if (e.target.id === "pop-member") {
    const card = e.target.querySelector(".member-card");
    if (card) state.memberId = Number(card.dataset.memberId);
  }
});

// ------------------------------------------------------------------ wrap-up
function startWrapup(data) {
  const form = $("wrapup");
  form.reset();
  form.elements.linkedid.value = data.linkedid;
  form.elements.member_id.value = state.memberId || data.member_id || "";
  form.elements.direction.value = data.direction === "inbound" ? "in" : "out";
  $("wrapup-call").textContent = data.customer_number || "";
  $("wrapup-error").hidden = true;
  form.hidden = false;
  const policy = config.policies[data.queue] || null;
  clearInterval(state.wrapupTimer);
  const countdown = $("wrapup-countdown");
  if (policy && policy.wrapup_seconds > 0) {
    let left = Math.round(policy.wrapup_seconds);
    countdown.hidden = false;
    const tick = () => {
      countdown.textContent = `${S.wrapup_left}: ${left}s`;
      if (left-- <= 0 && !policy.wrapup_required) { clearInterval(state.wrapupTimer); countdown.hidden = true; }
    };
    tick();
    state.wrapupTimer = setInterval(tick, 1000);
  }
}

$("wrapup").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const body = formData(form);
  if (body.member_id) body.member_id = Number(body.member_id);
  if (body.follow_up_at) body.follow_up_at = new Date(body.follow_up_at).toISOString();
  try {
    await api("POST", "/api/v1/wrapup", body);
    form.hidden = true;
    clearInterval(state.wrapupTimer);
    $("wrapup-countdown").hidden = true;
    toast(S.saved);
  } catch (err) {
    $("wrapup-error").textContent = err.details ? err.details.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ") : err.message;
    $("wrapup-error").hidden = false;
  }
});

// ------------------------------------------------------------------ queues, banner, team
function showQueues(queues) {
  const body = $("queue-stats").querySelector("tbody");
  body.innerHTML = "";
  for (const [name, q] of Object.entries(queues || {})) {
    const row = document.createElement("tr");
    row.dataset.queue = name;
    for (const value of [config.queue_names[name] || name, q.waiting, q.waiting ? `${Math.round(q.longest_wait)}s` : "", q.agents_ready ?? ""]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    if (q.waiting) row.classList.add("busy");
    body.appendChild(row);
  }
}

function showBanner(banner) {
  const el = $("banner");
  if (!el) return;
  el.textContent = banner && banner.text ? `📢 ${banner.text}` : "";
  el.hidden = !(banner && banner.text);
}

const team = new Map();
function showTeam(data) {
  const list = $("team-states");
  if (!list) return;
  team.set(data.agent, data);
  list.innerHTML = "";
  for (const a of [...team.values()].sort((x, y) => x.agent.localeCompare(y.agent))) {
    const li = document.createElement("li");
    li.className = `state ${a.state}`;
    li.dataset.agent = a.agent;
    const label = document.createElement("span");
    label.textContent = `${a.name || a.agent}: ${S[a.state] || a.state}${a.pause_reason ? ` · ${a.pause_reason}` : ""}`;
    li.appendChild(label);
    const actions = a.state === "on_call" ? ["listen", "whisper", "barge"] : [];
    if (a.state !== "logged_out") actions.push(a.paused ? "ready" : "pause", "logout");
    for (const action of actions) {
      const b = document.createElement("button");
      b.className = "small team-action";
      b.dataset.agent = a.agent;
      b.dataset.action = action;
      b.textContent = S[`act_${action}`] || action;
      li.appendChild(b);
    }
    list.appendChild(li);
  }
}

const teamList = document.getElementById("team-states");
if (teamList) {
  teamList.addEventListener("click", async (e) => {
    const b = e.target.closest("button.team-action");
    if (!b) return;
    const { agent, action } = b.dataset;
    try {
      if (["listen", "whisper", "barge"].includes(action)) {
        await api("POST", "/api/v1/supervise", { agent, mode: action });
        toast(S.calling);
      } else {
        await api("POST", `/api/v1/agents/${agent}/${action}`, action === "pause" ? { reason: "meeting" } : {});
      }
    } catch (err) { toast(err.message, "error"); }
  });
}

const banner = document.getElementById("banner-form");
if (banner) {
  banner.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api("POST", "/api/v1/broadcast", { text: e.target.elements.text.value }); e.target.reset(); } catch (err) { toast(err.message, "error"); }
  });
}

// ------------------------------------------------------------------ frames
function onFrame(frame) {
  window.panel.frames.push({ seq: frame.seq, type: frame.type, at: performance.now() });
  if (window.panel.frames.length > 200) window.panel.frames.shift();
  const d = frame.data;
  switch (frame.type) {
    case "resync":
      showState(d.agent_state);
      for (const a of d.team || []) showTeam(a);
      showQueues(d.queues);
      showBanner(d.banner);
      if (d.call && d.call.html) showPop(d.call);
      fire("callbacks-changed");
      break;
    case "pop": showPop(d); break;
    case "supervising": {
      const pop = $("pop");
      pop.classList.remove("empty", "ended");
      pop.innerHTML = "";
      const h = document.createElement("h2");
      h.className = "supervising";
      h.textContent = `${S[`act_${d.mode}`] || d.mode}: ${d.agent || ""}`;
      pop.appendChild(h);
      break;
    }
    case "agent_state": showState(d); break;
    case "team_state": showTeam(d); break;
    case "queues": showQueues(d.queues); break;
    case "banner": showBanner(d); break;
    case "pci": showPci(d); break;
    case "callbacks_changed": fire("callbacks-changed"); break;
    case "notification": toast(`🔔 ${d.title}`, "warn"); break;
    case "call_answered":
      if (state.call && state.call.linkedid === d.linkedid) $("pop").classList.add("answered");
      break;
    case "call_ended":
      clearInterval(state.waitTimer);
      if (state.call && state.call.linkedid === d.linkedid) $("pop").classList.add("ended");
      if (d.answered) startWrapup(d);
      break;
    default: break;
  }
}

new PanelSocket(onFrame, (status) => {
  document.body.classList.toggle("ws-down", status !== "open");
});
phone.start();
