// The reports page: a refused report (bad period, queue outside one's teams) answers 4xx with an
// error panel; htmx leaves 4xx responses unswapped by default, so let the report area show it.

document.body.addEventListener("htmx:beforeSwap", (event) => {
  const status = event.detail.xhr.status;
  if (event.detail.target && event.detail.target.id === "report" && status >= 400 && status < 500) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
