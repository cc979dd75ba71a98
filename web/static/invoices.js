// The invoice list's totals by status load after the list shows: over a broad
// filter they add up every matching invoice, which can take a while. Without
// JavaScript the link opens them as a page of their own.
document.addEventListener("DOMContentLoaded", () => {
  const link = document.getElementById("totals-link");
  const slot = document.getElementById("invoice-totals");
  if (!link || !slot) return;
  const label = link.textContent;
  slot.setAttribute("aria-busy", "true");
  link.textContent = "Adding up the totals by status…";
  fetch(link.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
    .then((response) => {
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return response.text();
    })
    .then((html) => {
      const page = new DOMParser().parseFromString(html, "text/html");
      const totals = page.getElementById("invoice-totals");
      if (!totals) throw new Error("no totals in the answer");
      slot.replaceWith(document.importNode(totals, true));
    })
    .catch(() => {
      link.textContent = label;
      slot.removeAttribute("aria-busy");
    });
});
