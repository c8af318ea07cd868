// Messages page: save a template, preview (missing fields listed), send with an idempotency key so a
// double click or a retried request sends once.
import { api, formData, toast } from "./common.js";

const preview = document.getElementById("message-preview");
const sendForm = document.getElementById("send-form");
let key = crypto.randomUUID();

function target() {
  const data = formData(sendForm);
  const body = { template_id: Number(data.template_id), member_id: Number(data.member_id) };
  if (data.request_id) body.request_id = Number(data.request_id);
  return body;
}

document.getElementById("template-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("POST", "/api/v1/messages/templates", formData(event.target));
    window.location.reload();
  } catch (error) { toast(error.message, "error"); }
});

document.getElementById("btn-preview")?.addEventListener("click", async () => {
  try {
    const shown = await api("POST", "/api/v1/messages/preview", target());
    preview.textContent = [shown.recipient || "—", shown.subject, shown.body,
      shown.missing.length ? `✗ ${shown.missing.join(", ")}` : "", shown.opted_out || ""].filter(Boolean).join("\n");
  } catch (error) { toast(error.message, "error"); }
});

sendForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const sent = await api("POST", "/api/v1/messages/send", { ...target(), idempotency_key: key });
    key = crypto.randomUUID();
    toast(`✓ ${sent.state}`);
    setTimeout(() => window.location.reload(), 800);
  } catch (error) { toast(error.message, "error"); }
});
