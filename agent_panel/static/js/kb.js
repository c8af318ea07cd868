// Knowledge-base pages: forms with data-kb send their fields as JSON (ids as numbers) and reload,
// or go to data-go + the new article's id.
import { api, toast } from "./common.js";

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-kb]");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [key, raw] of new FormData(form).entries()) {
    if (raw === "") continue;
    body[key] = key.endsWith("_id") ? Number(raw) : raw;
  }
  try {
    const result = await api(form.dataset.method || "POST", form.dataset.kb, body);
    if (form.dataset.go && result.id) window.location.assign(form.dataset.go + result.id);
    else window.location.reload();
  } catch (error) {
    toast(error.message, "error");
  }
});
