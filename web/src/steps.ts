/**
 * The tool trace of an acting agent: the steps of its tool loop (engine_agent.py), each
 * written once to `runs/{run}/nodes/{node}/steps/{index:06d}` before the next begins
 * (backends/gcp/firestore_steps.py). Model turns show tokens, cost and duration; tool
 * calls their arguments and result or error. Live: one listener on the selected node's
 * latest NODE_STEPS (50) steps, then one read per new step. A step too large for its
 * document (its JSON in chunks) is read only on "Load step".
 */

import * as F from "firebase/firestore";
import { type DocumentData, type Firestore, onSnapshot } from "firebase/firestore";
import * as Q from "./queries.js";
import { readChunks } from "./run";
import { el, usd } from "./util";

const PREVIEW = 4000; // characters of an argument or result shown inline

interface StepData {
  index: number;
  kind: "model" | "tool";
  name: string;
  attempt?: number;
  turn?: number;
  duration_ms?: number;
  arguments?: unknown;
  result?: unknown;
  error?: { type?: string; message?: string } | null;
  usage?: { input_tokens?: number; output_tokens?: number; cost_usd?: number };
}

function json(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return text.length > PREVIEW ? `${text.slice(0, PREVIEW)}…` : text;
}

export function describeStep(step: StepData): string {
  const ms = `${step.duration_ms ?? 0} ms`;
  if (step.kind === "model") {
    const u = step.usage ?? {};
    return `#${step.index} model ${step.name} · turn ${step.turn ?? "?"} · ${u.input_tokens ?? 0} in / ${u.output_tokens ?? 0} out tokens · ${usd(u.cost_usd)} · ${ms}`;
  }
  return `#${step.index} tool ${step.name} · ${step.error ? "error" : "ok"} · ${ms}`;
}

function stepBody(step: StepData): HTMLElement[] {
  if (step.kind === "model") return [el("pre", { class: "step-result", text: json(step.result ?? null) })];
  const parts = [el("pre", { class: "step-args", text: `arguments: ${json(step.arguments ?? {})}` })];
  if (step.error) {
    parts.push(el("pre", { class: "error step-error", text: `${step.error.type ?? "error"}: ${step.error.message ?? ""}` }));
  } else {
    parts.push(el("pre", { class: "step-result", text: `result: ${json(step.result ?? null)}` }));
  }
  return parts;
}

/** The trace of the selected node, kept (and its listener) while that node stays selected. */
export class StepTrace {
  private nodeId: string | null = null;
  private stopSteps: (() => void) | null = null;
  private readonly element = el("div", { class: "steps", id: "node-steps" });

  constructor(
    private readonly db: Firestore,
    private readonly runId: string,
  ) {}

  /** The section for `nodeId`: hidden until the node has steps (a tool or plain agent has none). */
  section(nodeId: string): HTMLElement {
    if (nodeId !== this.nodeId) this.watch(nodeId);
    return this.element;
  }

  private watch(nodeId: string): void {
    this.stop();
    this.nodeId = nodeId;
    this.element.hidden = true;
    this.element.replaceChildren();
    this.stopSteps = onSnapshot(
      Q.nodeStepsQuery(F, this.db, this.runId, nodeId),
      (snap) => this.draw(nodeId, snap.docs.map((d) => ({ id: d.id, data: d.data() })).reverse()),
      (error) => {
        this.element.hidden = false;
        this.element.replaceChildren(el("p", { class: "error", text: `Cannot read the steps (${error.code}): ${error.message}` }));
      },
    );
  }

  private draw(nodeId: string, docs: { id: string; data: DocumentData }[]): void {
    this.element.hidden = docs.length === 0;
    const list = el("ol", { class: "steps-list" });
    for (const { id, data } of docs) {
      const item = el("li", { class: `step ${data.kind}`, "data-kind": String(data.kind), "data-index": String(data.index) });
      if (data.step_json != null) {
        const step = JSON.parse(String(data.step_json)) as StepData;
        item.append(el("div", { class: "step-head", text: describeStep(step) }), ...stepBody(step));
      } else if (data.step_ref) {
        const ref = data.step_ref as { chunks: number; prefix: string; bytes: number };
        const load = el("button", { type: "button", text: `Load step (${ref.bytes.toLocaleString()} bytes)` });
        load.addEventListener("click", async () => {
          load.disabled = true;
          const text = await readChunks(this.db, ["runs", this.runId, "nodes", Q.nodeDocId(nodeId), "steps", id], ref);
          const step = JSON.parse(text) as StepData;
          load.replaceWith(el("div", { class: "step-head", text: describeStep(step) }), ...stepBody(step));
        });
        item.append(el("div", { class: "step-head", text: `#${data.index} ${data.kind} ${data.name}` }), load);
      }
      list.append(item);
    }
    const latest = docs.length >= Q.NODE_STEPS ? ` (the latest ${Q.NODE_STEPS})` : "";
    this.element.replaceChildren(el("h3", { text: `Tool trace${latest}` }), list);
  }

  stop(): void {
    this.stopSteps?.();
    this.stopSteps = null;
    this.nodeId = null;
  }
}
