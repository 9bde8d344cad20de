/**
 * The node panel's approval section: for a node in `waiting_approval`, the question, the
 * value computed for review (editable: it becomes the node's output payload when
 * approved), a comment, and Approve / Reject buttons that call the api with the user's ID
 * token (POST /runs/{id}/nodes/{node}/approve|reject). The run's owner and the approvers
 * the node lists may decide; the api answers 409 once the node was decided.
 */

import { api } from "./api";
import { type NodeContext, nodeSections } from "./run";
import { el, when } from "./util";

interface Pending {
  decision?: string;
  message?: string;
  payload?: unknown;
  approvers?: string[];
  expires_at?: number;
}

function parsed(text: unknown): Pending {
  if (typeof text !== "string") return {};
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? (value as Pending) : {};
  } catch {
    return {};
  }
}

export function approvalSection(
  node: Record<string, unknown>,
  context: NodeContext,
): HTMLElement | null {
  if (node.status !== "waiting_approval" || !context.apiUrl) return null;
  const request = parsed(node.output_json);
  const nodeId = String(node.node_id ?? "");
  const comment = el("textarea", { id: "approval-comment", rows: "2", "aria-label": "Comment" });
  const payload = el("textarea", { id: "approval-payload", rows: "4", "aria-label": "Payload (JSON)" });
  payload.value = JSON.stringify(request.payload ?? null, null, 2);
  const status = el("p", { id: "approval-message", class: "muted", role: "status" });
  const approve = el("button", { type: "button", id: "approve", text: "Approve" });
  const reject = el("button", { type: "button", id: "reject", class: "danger", text: "Reject" });

  const decide = async (verb: "approve" | "reject") => {
    const body: Record<string, unknown> = { comment: comment.value || null };
    if (verb === "approve") {
      try {
        body.payload = JSON.parse(payload.value);
      } catch (error) {
        status.textContent = `The payload is not JSON: ${(error as Error).message}`;
        return;
      }
    }
    approve.disabled = reject.disabled = true;
    try {
      const path = `/runs/${context.runId}/nodes/${encodeURIComponent(nodeId)}/${verb}`;
      await api(context.session, context.apiUrl, "POST", path, body);
      status.textContent = verb === "approve" ? "Approved." : "Rejected.";
    } catch (error) {
      status.textContent = `${verb === "approve" ? "Approve" : "Reject"} failed: ${(error as Error).message}`;
      approve.disabled = reject.disabled = false;
    }
  };
  approve.addEventListener("click", () => void decide("approve"));
  reject.addEventListener("click", () => void decide("reject"));

  return el(
    "div",
    { class: "approval", id: "approval" },
    el("h3", { text: "Waiting for approval" }),
    el("p", { id: "approval-question", text: request.message ?? "" }),
    el("p", {
      class: "muted",
      text: `Decide by ${when(request.expires_at)}${
        request.approvers?.length ? ` · approvers: ${request.approvers.join(", ")}` : ""
      }`,
    }),
    el("label", {}, "Payload (JSON, sent on approve)", payload),
    el("label", {}, "Comment", comment),
    el("div", { class: "actions" }, approve, reject),
    status,
  );
}

nodeSections.push(approvalSection);
