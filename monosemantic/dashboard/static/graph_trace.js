// "trace this": POST /api/trace with the prompt (and target), then open the new graph.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  const button = document.getElementById("trace");
  button.addEventListener("click", async () => {
    const target = document.getElementById("target").value;
    button.disabled = true;
    MS.status(status, "tracing… (up to a minute on a CPU)");
    try {
      const made = await MS.post("/api/trace", {prompt: document.getElementById("text").value, target: target || null});
      MS.status(status, `${made.counts.kept_nodes} nodes, ${made.counts.kept_edges} edges`);
      window.location.href = made.url;
    } catch (e) {
      MS.status(status, e.message, true);
    } finally {
      button.disabled = false;
    }
  });
});
