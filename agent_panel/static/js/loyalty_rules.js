// Earning rules page: add a rule (parameters as JSON, checked by the server), end or disable one, and
// preview what a purchase would earn at a moment under the enabled rules.
import { api, toast } from "./common.js";

const EXAMPLES = {
  rate: { points_per_unit: 2, unit_fen: 10000, bands: [{ from_fen: 0 }, { from_fen: 500000, offset_points: "100" }] },
  category: { category: "家电", multiplier: "1.5" },
  tier: { tier: "gold", multiplier: "1.2" },
  campaign: { multiplier: "2" },
  event: { event: "join", points: 1000, expiry: "year_end", years: 0 },
};

const iso = (value) => (value ? new Date(value).toISOString() : null);

function example() {
  const form = document.getElementById("rule-form");
  form.params.placeholder = JSON.stringify(EXAMPLES[form.kind.value], null, 1);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("rule-form");
  if (!form) return;
  form.kind.addEventListener("change", example);
  example();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let params;
    try {
      params = JSON.parse(form.params.value || form.params.placeholder);
    } catch (error) {
      toast(`${form.dataset.badJson}: ${error.message}`, "error");
      return;
    }
    const body = { name: form.name.value, kind: form.kind.value, params,
      starts_at: iso(form.starts_at.value), ends_at: iso(form.ends_at.value) };
    try {
      await api("POST", "/api/v1/loyalty/rules", body);
      window.location.reload();
    } catch (error) {
      toast(error.message, "error");
    }
  });
  document.getElementById("preview-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const preview = event.target;
    const body = { amount_fen: Math.round(Number(preview.amount.value) * 100), category: preview.category.value };
    if (preview.at.value) body.at = iso(preview.at.value);
    if (preview.tier.value) body.tier = preview.tier.value;
    try {
      const result = await api("POST", "/api/v1/loyalty/rules/preview", body);
      document.getElementById("preview-result").textContent = JSON.stringify(result, null, 1);
    } catch (error) {
      toast(error.message, "error");
    }
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-end]");
    if (!button) return;
    const body = button.dataset.end === "disable" ? { disable: true } : { ends_at: new Date().toISOString() };
    try {
      await api("POST", `/api/v1/loyalty/rules/${button.dataset.rule}/end`, body);
      window.location.reload();
    } catch (error) {
      toast(error.message, "error");
    }
  });
});
