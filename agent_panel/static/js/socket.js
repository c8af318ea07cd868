// The panel's WebSocket: numbered frames, resume from the last one after a reconnect, resync
// when the server could not keep what was missed. Reconnects with backoff and jitter.

export class PanelSocket {
  constructor(onFrame, onStatus) {
    this.onFrame = onFrame;
    this.onStatus = onStatus || (() => {});
    this.lastSeq = -1;
    this.attempt = 0;
    this.closedByUs = false;
    this.connect();
    setInterval(() => { if (this.ws && this.ws.readyState === 1) this.ws.send("ping"); }, 20000);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws?last_seq=${this.lastSeq}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; this.onStatus("open"); };
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "pong") return;
      if (typeof frame.seq === "number") {
        if (frame.type !== "resync" && frame.type !== "resumed" && frame.seq <= this.lastSeq) return;
        this.lastSeq = frame.seq;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      this.onStatus("closed", event.code);
      if (this.closedByUs || event.code === 4003) { if (event.code === 4003) location.href = "/login"; return; }
      if (event.code === 1008 || event.code === 4401) { location.href = "/login"; return; }
      const delay = Math.min(10000, 250 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      setTimeout(() => this.connect(), delay);
    };
  }

  close() { this.closedByUs = true; this.ws.close(); }
}
