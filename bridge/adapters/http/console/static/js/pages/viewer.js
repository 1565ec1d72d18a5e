// #/viewer/{study}: the viewer inside the console, for a logged-in user (clinicians see only
// the studies they may; others answer 404).
import { el, replace } from "../ui.js";
import { openViewer } from "../viewer/viewer.js";

export async function render(view, [study]) {
  if (!study) {
    replace(view, el("p", {}, "Choose a study on the Studies page."));
    return null;
  }
  document.body.classList.add("viewer");
  const holder = el("div", {});
  replace(view, holder);
  const stop = await openViewer(holder, study);
  return () => {
    document.body.classList.remove("viewer");
    stop();
  };
}
