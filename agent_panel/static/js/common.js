// Shared by every page: JSON calls with the CSRF token, toasts, and the buttons any page may show
// (click-to-dial, link a caller's number, callback actions, communication records).

export const csrf = () => document.body.dataset.csrf || "";

export async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch { /* empty body */ }
  if (!response.ok) {
    const message = data.error || response.statusText;
    const error = new Error(message);
    error.status = response.status;
    error.details = data.details;
    throw error;
  }
  return data;
}

let toastTimer;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

export function formData(form) {
  const out = {};
  for (const [key, value] of new FormData(form).entries()) {
    if (key === "csrf_token") continue;
    if (value === "") continue;
    out[key] = value;
  }
  return out;
}

export function fire(name) {
  document.body.dispatchEvent(new CustomEvent(name, { bubbles: true }));
}

async function onClick(event) {
  const button = event.target.closest("button");
  if (!button) return;
  try {
    if (button.classList.contains("dial")) {
      const body = { member_id: Number(button.dataset.memberId) };
      if (button.dataset.contactId) body.contact_id = Number(button.dataset.contactId);
      const result = await api("POST", "/api/v1/dial", body);
      toast(`☎ ${result.number}`);
    } else if (button.classList.contains("link-number")) {
      await api("POST", `/api/v1/members/${button.dataset.memberId}/link-number`, { number: button.dataset.number });
      button.disabled = true;
      toast("✓");
      const target = document.getElementById("pop-member");
      if (target && window.htmx) {
        window.htmx.ajax("GET", `/partials/member/${button.dataset.memberId}`, { target, swap: "innerHTML" });
      }
    } else if (button.classList.contains("cb-claim")) {
      await api("POST", `/api/v1/callbacks/${button.dataset.callbackId}/claim`);
      fire("callbacks-changed");
    } else if (button.classList.contains("cb-release")) {
      await api("POST", `/api/v1/callbacks/${button.dataset.callbackId}/release`);
      fire("callbacks-changed");
    } else if (button.classList.contains("cb-dial")) {
      const result = await api("POST", `/api/v1/callbacks/${button.dataset.callbackId}/dial`);
      toast(`☎ ${result.number}`);
    } else if (button.classList.contains("cb-attempt")) {
      const outcome = button.parentElement.querySelector(".cb-outcome").value;
      await api("POST", `/api/v1/callbacks/${button.dataset.callbackId}/attempt`, { outcome });
      fire("callbacks-changed");
    } else {
      return;
    }
  } catch (error) {
    toast(error.message, "error");
    if (button.classList.contains("cb-claim")) fire("callbacks-changed");
  }
}

async function onSubmit(event) {
  const form = event.target;
  if (form.id !== "comm-form") return;
  event.preventDefault();
  const error = form.querySelector(".error");
  try {
    await api("POST", `/api/v1/members/${form.dataset.memberId}/comms`, formData(form));
    form.reset();
    error.hidden = true;
    fire("comms-changed");
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

document.addEventListener("click", onClick);
document.addEventListener("submit", onSubmit);

// A service request from the screen pop (the call, the caller's number and the member shown) or from a
// member page; the new request's number is announced and the page keeps its place.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.new-service-request");
  if (!form) return;
  event.preventDefault();
  const body = { type: form.elements.type.value, subject: form.elements.subject.value };
  if (form.dataset.callId) body.call_id = form.dataset.callId;
  if (form.dataset.phone) body.phone = form.dataset.phone;
  const card = form.dataset.memberId ? null : document.querySelector("#pop-member .member-card[data-member-id]");
  const memberId = form.dataset.memberId || card?.dataset.memberId;
  if (memberId) body.member_id = Number(memberId);
  try {
    const created = await api("POST", "/api/v1/service/requests", body);
    form.reset();
    form.dataset.created = created.no;
    toast(`✓ ${created.no}`);
  } catch (error) {
    toast(error.message, "error");
  }
});
