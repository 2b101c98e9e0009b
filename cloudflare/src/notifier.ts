// StoreNotifier: one per namespace. Keeps the last 10,000 change announcements of its shards
// in memory, numbered from 1 under a random epoch (a new epoch whenever the object starts
// afresh), and answers long polls for the changes after a number. Announcements are hints:
// a caller whose epoch differs, or who fell behind the buffer, is told to resync.

import { DurableObject } from "cloudflare:workers";
import { Change, Env } from "./common";

const KEEP = 10_000;
const MAX_WAIT_MS = 30_000;

export interface ChangesAnswer {
  epoch: string;
  seq: number;
  changes: Change[];
  resync: boolean;
}

function randomEpoch(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class StoreNotifier extends DurableObject<Env> {
  private epoch = randomEpoch();
  /** The newest change's number (0: none yet). */
  private seq = 0;
  /** The buffered changes, oldest first; the last is number `seq`. */
  private ring: Change[] = [];
  private waiters = new Set<() => void>();

  /** Answers at once: `hello` wakes the notifier with it. */
  async ping(): Promise<boolean> {
    return true;
  }

  async publish(changes: Change[]): Promise<void> {
    for (const change of changes) {
      this.ring.push(change);
      this.seq++;
    }
    if (this.ring.length > KEEP) this.ring.splice(0, this.ring.length - KEEP);
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiting) wake();
  }

  /** The number of the oldest buffered change. */
  private oldest(): number {
    return this.seq - this.ring.length + 1;
  }

  private answer(after: number): ChangesAnswer {
    const from = Math.max(0, after - this.oldest() + 1);
    return { epoch: this.epoch, seq: this.seq, changes: this.ring.slice(from), resync: false };
  }

  async changes(after: number | null, epoch: string | null, waitMs: number): Promise<ChangesAnswer> {
    // A new subscriber starts from now; a stale or foreign position must resync.
    if (after === null || epoch === null) {
      return { epoch: this.epoch, seq: this.seq, changes: [], resync: epoch !== null && epoch !== this.epoch };
    }
    if (epoch !== this.epoch || after > this.seq || after < this.oldest() - 1) {
      return { epoch: this.epoch, seq: this.seq, changes: [], resync: true };
    }
    if (after < this.seq) return this.answer(after);
    const wait = Math.max(0, Math.min(waitMs, MAX_WAIT_MS));
    if (wait > 0) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, wait);
        this.waiters.add(wake);
      });
    }
    return this.answer(after);
  }
}
