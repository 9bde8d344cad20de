import type * as Firestore from "firebase/firestore";

type F = typeof Firestore;
type Db = Firestore.Firestore;
type Snap = Firestore.QueryDocumentSnapshot<Firestore.DocumentData>;

export const RUNS_PAGE: number;
export const NODE_WINDOW: number;
export const NODE_EVENTS: number;
export function runsQuery(F: F, db: Db, uid: string, after?: Snap): Firestore.Query;
export function runDoc(F: F, db: Db, runId: string): Firestore.DocumentReference;
export function runNodesQuery(F: F, db: Db, runId: string, status: string | null): Firestore.Query;
export function nodesWindowQuery(F: F, db: Db, runId: string, first: number, end?: number): Firestore.Query;
export function nodeDoc(F: F, db: Db, runId: string, nodeId: string): Firestore.DocumentReference;
export function nodeEventsQuery(F: F, db: Db, runId: string, nodeId: string): Firestore.Query;
export function chunkDocs(
  F: F,
  db: Db,
  parent: string[],
  marker: { chunks: number; prefix: string },
): Firestore.DocumentReference[];
export const GROUP_PAGE: number;
export const GROUP_ACTIVE: number;
export const GROUPS_COUNTED: number;
export const ACTIVE_STATUSES: string[];
export const ENDED_STATUSES: string[];
export const NODE_STEPS: number;
export function groupCountQuery(
  F: F,
  db: Db,
  runId: string,
  controllerId: string,
  mark: string,
  status: string | null,
): Firestore.Query;
export function groupActiveQuery(F: F, db: Db, runId: string, controllerId: string, mark: string): Firestore.Query;
export function instancesByIdQuery(F: F, db: Db, runId: string, ids: string[]): Firestore.Query;
export function instancesPageQuery(
  F: F,
  db: Db,
  runId: string,
  controllerId: string,
  mark: string,
  afterId?: string,
): Firestore.Query;
export function nodeStepsQuery(F: F, db: Db, runId: string, nodeId: string): Firestore.Query;
export function nodeDocId(nodeId: string): string;
