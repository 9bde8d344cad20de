/** The REST api, called with the signed-in user's ID token (never anyone else's). */

import type { Session } from "./session";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function api<T>(
  session: Session,
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${await session.idToken()}`,
  };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = data?.error ?? {};
    const details = (error.details ?? [])
      .map((d: { path: string; message: string }) => `${d.path}: ${d.message}`)
      .join("; ");
    throw new ApiError(
      response.status,
      error.code ?? "error",
      `${error.message ?? response.statusText}${details ? ` (${details})` : ""}`,
    );
  }
  return data as T;
}
