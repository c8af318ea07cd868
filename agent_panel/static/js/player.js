// Recording player: wavesurfer.js draws the stored peaks (no download or decode before a play), the
// <audio> element streams the signed URL with Range requests, and the PCI-paused spans are regions.
// Loaded on every page; wavesurfer itself is imported only when a player is on the page.
import { api, toast } from "./common.js";

const PCI_COLOUR = "rgba(220, 53, 69, 0.25)";

function fmt(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function mount(el) {
  if (el.dataset.mounted) return;
  el.dataset.mounted = "1";
  const rec = JSON.parse(el.dataset.recording);
  const audio = el.querySelector("audio");
  const [{ default: WaveSurfer }, { default: RegionsPlugin }] = await Promise.all([
    import("/static/dist/wavesurfer.esm.js"),
    import("/static/dist/wavesurfer-regions.esm.js"),
  ]);
  const regions = RegionsPlugin.create();
  const peaks = rec.peaks && rec.peaks.length ? [rec.peaks] : undefined;
  const ws = WaveSurfer.create({
    container: el.querySelector(".waveform"),
    media: audio,
    peaks,
    duration: rec.duration_s || undefined,
    height: 64,
    waveColor: "#8aa4c8",
    progressColor: "#1f4e8c",
    cursorColor: "#d9534f",
    normalize: true,
    plugins: [regions],
  });
  let spansAdded = false;
  const addSpans = () => {
    if (spansAdded) return;
    spansAdded = true;
    for (const [start, end] of rec.pci_spans || []) {
      regions.addRegion({ start, end, color: PCI_COLOUR, drag: false, resize: false, content: "PCI" });
    }
  };
  // Only once the duration is known: a region added before that is drawn at 0.
  ws.on("ready", addSpans);
  const play = el.querySelector("button.play");
  const pos = el.querySelector(".pos");
  play.addEventListener("click", () => ws.playPause());
  ws.on("play", () => { play.classList.add("playing"); el.dataset.playing = "1"; });
  ws.on("pause", () => { play.classList.remove("playing"); delete el.dataset.playing; });
  ws.on("timeupdate", (t) => { pos.textContent = fmt(t); });
  ws.on("error", (e) => toast(String(e), "error"));
  el.querySelector("select.rate").addEventListener("change", (e) => ws.setPlaybackRate(Number(e.target.value)));
  el.wavesurfer = ws; // for the browser tests and the console
}

function scan(root) {
  if (root.matches && root.matches(".recording-player")) mount(root).catch((e) => toast(String(e), "error"));
  for (const el of root.querySelectorAll(".recording-player")) mount(el).catch((e) => toast(String(e), "error"));
}

document.addEventListener("DOMContentLoaded", () => scan(document));
document.addEventListener("htmx:load", (e) => scan(e.target));
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.recording-hold");
  if (!button) return;
  const action = button.dataset.action;
  let body = {};
  if (action === "hold") {
    const reason = window.prompt(button.textContent.trim());
    if (!reason) return;
    body = { reason };
  }
  try {
    await api("POST", `/api/v1/recordings/${button.dataset.recordingId}/${action}`, body);
    const section = button.closest("section.recording");
    const holder = section && section.parentElement;
    if (holder && holder.getAttribute("hx-get") && window.htmx) window.htmx.ajax("GET", holder.getAttribute("hx-get"), holder);
  } catch (e) {
    toast(e.message, "error");
  }
});
