/**
 * The console's entry: load config.json, sign in, then route on the URL hash:
 * #/runs (my runs), #/runs/<id> (one run, live), #/start[/<graph>] (start a run).
 * Each view's Firestore listeners are stopped when the view changes.
 */

import "./approval"; // registers the node panel's Approve / Reject section
import { loadConfig } from "./config";
import { renderRun } from "./run";
import { renderRuns } from "./runs";
import { type Session, signIn } from "./session";
import { renderStart } from "./start";
import { Listeners, el } from "./util";

const main = document.getElementById("main") as HTMLElement;
const who = document.getElementById("who") as HTMLElement;
const listeners = new Listeners();

function route(session: Session, apiUrl: string): void {
  listeners.stopAll();
  const [, view = "runs", id = ""] = location.hash.replace(/^#/, "").split("/");
  if (view === "runs" && id) renderRun(session, apiUrl, decodeURIComponent(id), main, listeners);
  else if (view === "start") renderStart(session, apiUrl, main, decodeURIComponent(id));
  else renderRuns(session, main, listeners);
}

async function boot(): Promise<void> {
  const config = await loadConfig();
  signIn(config, main, (session) => {
    listeners.stopAll();
    if (!session) {
      who.replaceChildren();
      return;
    }
    const out = el("button", { type: "button", class: "link", text: "Sign out" });
    out.addEventListener("click", () => void session.signOut());
    who.replaceChildren(el("span", { id: "signed-in-as", text: session.label }), out);
    window.onhashchange = () => route(session, config.apiUrl);
    route(session, config.apiUrl);
  });
}

boot().catch((error: Error) => {
  main.replaceChildren(el("p", { class: "error", text: `The console cannot start: ${error.message}` }));
});
