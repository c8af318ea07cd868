// Service-desk pages: every form with data-api posts its fields as JSON to that URL and reloads
// (or goes to data-go + the new id). Numbers and booleans are sent as such; the API validates.
import { api, toast } from "./common.js";

function value(raw) {
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (raw === "null") return null;
  return /^\d+$/.test(raw) ? Number(raw) : raw;
}

const TEXT_FIELDS = new Set(["subject", "note", "outcome", "phone", "kind", "description", "day"]);

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [key, raw] of new FormData(form).entries()) {
    if (raw === "" || key === "csrf_token") continue;
    body[key] = TEXT_FIELDS.has(key) ? raw : value(raw);
  }
  if (form.querySelector("[name=working]") && !("working" in body)) body.working = null;
  const page = document.getElementById("service-request");
  if (page && form.dataset.api.endsWith("/assign") && body.owner_user_id) body.version = Number(page.dataset.version);
  try {
    const result = await api(form.dataset.method || "POST", form.dataset.api, body);
    if (form.dataset.go && result.id) window.location.assign(form.dataset.go + result.id);
    else window.location.reload();
  } catch (error) {
    toast(error.message, "error");
  }
});
