// Jobs: the durable queue's failed jobs (forwards, publications, exports...), with their last
// error, requeued one by one or all at once.
import { get, post, query } from "../api.js";
import { badge, el, errorText, notice, replace, table, when } from "../ui.js";

export async function render(view, [queue]) {
  const message = el("div", { "aria-live": "polite", id: "jobs-message" });
  const list = el("div", { id: "job-list" });
  const all = el("button", { type: "button", id: "requeue-all" }, "Requeue every failed job");
  replace(view, el("h2", {}, queue ? `Failed jobs: ${queue}` : "Failed jobs"), message, all, list);

  async function load() {
    try {
      const rows = await get(`/api/jobs${query({ status: "failed", queue, limit: 200 })}`);
      replace(list, table(rows, [
        { label: "Queue", value: (j) => j.queue }, { label: "Since", value: (j) => when(j.updated_at) },
        { label: "Attempts", value: (j) => j.attempts }, { label: "Status", value: (j) => badge(j.status) },
        { label: "Last error", value: (j) => j.last_error || "" },
        { label: "", value: (j) => el("button", { type: "button", class: "secondary", onclick: () => requeue(j) }, "Requeue") },
      ], { caption: "Failed jobs", empty: "No failed job." }));
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  async function requeue(job) {
    try {
      await post(`/api/jobs/${job.id}/requeue`);
      replace(message, notice("ok", `Job ${job.id} requeued.`));
      await load();
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    }
  }

  all.addEventListener("click", async () => {
    all.disabled = true;
    try {
      const result = await post(`/api/jobs/requeue-failed${query({ queue })}`);
      replace(message, notice("ok", `${result.requeued} jobs requeued.`));
      await load();
    } catch (error) {
      replace(message, notice("error", errorText(error)));
    } finally {
      all.disabled = false;
    }
  });
  await load();
  return null;
}
