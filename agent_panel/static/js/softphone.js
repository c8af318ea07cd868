// The agent's WebRTC softphone: JsSIP over Asterisk's WebSocket with credentials the server issues
// after sign-in (GET /api/v1/softphone), never written into the page.
/* global JsSIP */

const AGENT = /^(?:agent|webrtc)(\d{4})$/;

export class Softphone extends EventTarget {
  constructor(audio) {
    super();
    this.audio = audio;
    this.ua = null;
    this.session = null; // the customer call
    this.consult = null; // an attended transfer's consultation call
    this.domain = "";
    this.muted = false;
    this.held = false;
  }

  emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  async start() {
    const response = await fetch("/api/v1/softphone", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) { this.emit("status", { status: "unconfigured" }); return; }
    const creds = await response.json();
    this.domain = creds.uri.split("@")[1];
    const socket = new JsSIP.WebSocketInterface(creds.ws_url);
    this.ua = new JsSIP.UA({
      sockets: [socket],
      uri: creds.uri,
      authorization_user: creds.authorization_user,
      password: creds.password,
      display_name: creds.display_name,
      register: true,
      session_timers: true,
      user_agent: "member-cti panel",
    });
    this.ua.on("connecting", () => this.emit("status", { status: "connecting" }));
    this.ua.on("registered", () => this.emit("status", { status: "registered" }));
    this.ua.on("unregistered", () => this.emit("status", { status: "unregistered" }));
    this.ua.on("registrationFailed", (e) => this.emit("status", { status: "unregistered", cause: e.cause }));
    this.ua.on("disconnected", () => this.emit("status", { status: "unregistered" }));
    this.ua.on("newRTCSession", (e) => this.onSession(e));
    this.ua.start();
  }

  pcConfig() {
    // No STUN: JsSIP waits for ICE gathering, so an unreachable STUN server would delay every call.
    return { iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
  }

  onSession(e) {
    const session = e.session;
    if (e.originator === "remote") {
      if (this.session) { session.terminate({ status_code: 486 }); return; }
      this.session = session;
      this.bind(session, "main");
      const from = session.remote_identity;
      this.emit("incoming", { number: from.uri.user, name: from.display_name });
    } else if (this.consultPending) {
      this.consult = session;
      this.consultPending = false;
      this.bind(session, "consult");
    } else {
      this.session = session;
      this.bind(session, "main");
    }
  }

  bind(session, role) {
    session.on("peerconnection", (ev) => this.attachAudio(ev.peerconnection));
    if (session.connection) this.attachAudio(session.connection);
    session.on("confirmed", () => { this.emit("confirmed", { role }); });
    session.on("accepted", () => { if (session.connection) this.attachAudio(session.connection); });
    session.on("ended", () => this.ended(session, role));
    session.on("failed", () => this.ended(session, role));
    session.on("hold", () => this.emit("hold", { held: true, role }));
    session.on("unhold", () => this.emit("hold", { held: false, role }));
  }

  attachAudio(pc) {
    pc.addEventListener("track", (ev) => {
      if (ev.streams && ev.streams[0]) this.audio.srcObject = ev.streams[0];
    });
  }

  ended(session, role) {
    if (role === "consult" && this.consult === session) {
      this.consult = null;
      this.emit("consult-ended");
      return;
    }
    if (this.session === session) {
      this.session = null;
      this.muted = false;
      this.held = false;
      this.emit("ended");
    }
  }

  get pc() { return this.session ? this.session.connection : null; }

  answer() {
    if (!this.session) return;
    this.session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: this.pcConfig() });
  }

  hangup() { if (this.session) this.session.terminate(); }

  toggleHold() {
    if (!this.session) return;
    if (this.held) this.session.unhold(); else this.session.hold();
    this.held = !this.held;
    return this.held;
  }

  toggleMute() {
    if (!this.session) return;
    if (this.muted) this.session.unmute({ audio: true }); else this.session.mute({ audio: true });
    this.muted = !this.muted;
    return this.muted;
  }

  dtmf(tone) { (this.consult || this.session)?.sendDTMF(tone, { transportType: "RFC2833" }); }

  target(text) {
    const value = text.trim();
    const agent = value.match(AGENT);
    const user = agent ? agent[1] : value.replace(/[^0-9A-Za-z*#+_-]/g, "");
    return `sip:${user}@${this.domain}`;
  }

  blindTransfer(text) {
    if (!this.session || !text.trim()) return false;
    const session = this.session;
    // The PBX took the call over once it accepts the REFER: this leg can go.
    session.refer(this.target(text), {
      eventHandlers: {
        requestSucceeded: () => { if (!session.isEnded()) session.terminate(); },
        requestFailed: () => this.emit("transfer-failed"),
      },
    });
    return true;
  }

  /** Attended transfer, step 1: hold the customer and call the target. */
  startConsult(text) {
    if (!this.session || this.consult || !text.trim()) return false;
    if (!this.held) { this.session.hold(); this.held = true; }
    this.consultPending = true;
    this.ua.call(this.target(text), { mediaConstraints: { audio: true, video: false }, pcConfig: this.pcConfig() });
    return true;
  }

  /** Step 2: join the customer to the consulted party (REFER with Replaces) and leave. */
  completeConsult() {
    if (!this.session || !this.consult) return false;
    const main = this.session;
    const consult = this.consult;
    const leave = () => {
      for (const s of [consult, main]) if (!s.isEnded()) s.terminate();
    };
    main.refer(consult.remote_identity.uri, {
      replaces: consult,
      eventHandlers: { accepted: leave, requestFailed: () => this.emit("transfer-failed") },
    });
    return true;
  }

  async stats() {
    const pc = this.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let sent = 0, received = 0;
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "audio") sent += s.bytesSent || 0;
      if (s.type === "inbound-rtp" && s.kind === "audio") received += s.bytesReceived || 0;
    });
    return { sent, received };
  }
}
