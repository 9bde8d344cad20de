/**
 * Start a run from a stored graph: GET /graphs/{id} gives the definition, whose `input`
 * JSON Schema becomes a form (strings, numbers, integers, booleans, enums; anything else
 * is a JSON text area); POST /runs {graph_id, input} starts the run, then its page opens.
 */

import { api } from "./api";
import type { Session } from "./session";
import { el } from "./util";

type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  description?: string;
  title?: string;
};

interface Field {
  name: string;
  read(): unknown;
}

function inputFor(name: string, schema: Schema, required: boolean): [HTMLElement, Field] {
  const id = `in-${name}`;
  const label = el("label", { for: id, text: `${schema.title ?? name}${required ? " *" : ""}` });
  const help = schema.description ? el("small", { text: schema.description }) : null;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  let control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  let read: () => unknown;
  if (schema.enum) {
    const select = el("select", { id, name });
    for (const option of schema.enum) select.append(el("option", { value: JSON.stringify(option), text: String(option) }));
    if (schema.default !== undefined) select.value = JSON.stringify(schema.default);
    control = select;
    read = () => JSON.parse(select.value);
  } else if (type === "boolean") {
    const box = el("input", { id, name, type: "checkbox" });
    box.checked = schema.default === true;
    control = box;
    read = () => box.checked;
  } else if (type === "number" || type === "integer") {
    const number = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any" });
    if (schema.default !== undefined) number.value = String(schema.default);
    control = number;
    read = () => (number.value === "" ? undefined : Number(number.value));
  } else if (type === "string") {
    const text = el("textarea", { id, name, rows: "3" });
    if (schema.default !== undefined) text.value = String(schema.default);
    control = text;
    read = () => (text.value === "" && !required ? undefined : text.value);
  } else {
    const json = el("textarea", { id, name, rows: "4", class: "json" });
    json.value = schema.default !== undefined ? JSON.stringify(schema.default, null, 2) : "";
    control = json;
    read = () => (json.value.trim() === "" ? undefined : JSON.parse(json.value));
  }
  if (required) control.setAttribute("required", "");
  return [el("div", { class: "form-field" }, label, control, help), { name, read }];
}

export function renderStart(session: Session, apiUrl: string, root: HTMLElement, graphId = ""): void {
  const status = el("p", { role: "status", id: "start-message", class: "muted" });
  const pick = el("form", { class: "card", id: "pick-graph" });
  const graphInput = el("input", { id: "graph-id", name: "graph", required: "", pattern: "[a-z0-9-]{1,63}" });
  graphInput.value = graphId;
  pick.append(
    el("label", { for: "graph-id", text: "Stored graph (its name)" }),
    graphInput,
    el("button", { type: "submit", text: "Open" }),
  );
  const formBox = el("div");
  root.replaceChildren(el("h1", { text: "Start a run" }), pick, formBox, status);

  const open = async (id: string) => {
    status.textContent = "Loading the graph…";
    formBox.replaceChildren();
    let stored: { definition: { input?: Schema; description?: string }; version: number };
    try {
      stored = await api(session, apiUrl, "GET", `/graphs/${encodeURIComponent(id)}`);
    } catch (error) {
      status.textContent = `Cannot open graph ${id}: ${(error as Error).message}`;
      return;
    }
    status.textContent = "";
    const schema = stored.definition.input ?? {};
    const fields: Field[] = [];
    const form = el("form", { class: "card", id: "run-form" }, el("h2", { text: `${id} (version ${stored.version})` }));
    if (stored.definition.description) form.append(el("p", { text: stored.definition.description }));
    const required = new Set(schema.required ?? []);
    let whole: Field | null = null;
    if (schema.type === "object" || schema.properties) {
      for (const [name, property] of Object.entries(schema.properties ?? {})) {
        const [node, field] = inputFor(name, property, required.has(name));
        form.append(node);
        fields.push(field);
      }
    } else if (stored.definition.input) {
      const [node, field] = inputFor("input", schema, true);
      form.append(node);
      whole = field;
    }
    const submit = el("button", { type: "submit", text: "Start run" });
    form.append(submit);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      let input: unknown;
      try {
        input = whole
          ? whole.read()
          : Object.fromEntries(fields.map((f) => [f.name, f.read()]).filter(([, v]) => v !== undefined));
      } catch (error) {
        status.textContent = `Not valid JSON: ${(error as Error).message}`;
        submit.disabled = false;
        return;
      }
      try {
        const run = await api<{ run_id: string }>(session, apiUrl, "POST", "/runs", {
          graph_id: id,
          version: stored.version,
          input: stored.definition.input ? input : undefined,
        });
        location.hash = `#/runs/${run.run_id}`;
      } catch (error) {
        status.textContent = `The run was not started: ${(error as Error).message}`;
        submit.disabled = false;
      }
    });
    formBox.append(form);
    (form.querySelector("input, select, textarea, button") as HTMLElement | null)?.focus();
  };
  pick.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/start/${graphInput.value.trim()}`;
  });
  if (graphId) void open(graphId);
  else graphInput.focus();
}
