import type * as Firestore from "firebase/firestore";

type F = typeof Firestore;
type Db = Firestore.Firestore;
type Snap = Firestore.QueryDocumentSnapshot<Firestore.DocumentData>;

export const RUNS_PAGE: number;
export const NODE_WINDOW: number;
export const NODE_EVENTS: number;
export function runsQuery(F: F, db: Db, uid: string, after?: Snap): Firestore.Query;
export function runDoc(F: F, db: Db, runId: string): Firestore.DocumentReference;
export function shardsQuery(F: F, db: Db, runId: string): Firestore.CollectionReference;
export function nodesWindowQuery(F: F, db: Db, runId: string, first: number): Firestore.Query;
export function nodeDoc(F: F, db: Db, runId: string, nodeId: string): Firestore.DocumentReference;
export function nodeEventsQuery(F: F, db: Db, runId: string, nodeId: string): Firestore.Query;
export function chunkDocs(
  F: F,
  db: Db,
  parent: string[],
  marker: { chunks: number; prefix: string },
): Firestore.DocumentReference[];
