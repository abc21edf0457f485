"""One load process of the soak: records, reserve/commit/release, checks, reports, until told to stop.

`python -m tests.soak_worker SOCKET OUT SECONDS SEED`: every acknowledged record's idempotency key,
every acknowledged hold (some are left open on purpose) and every acknowledged close of one is
appended to OUT (flushed at once), so the driver can check the ledger against what was acknowledged.
Daemon restarts are survived: a failed call is retried with the same key until it is answered.
"""

import random
import sys
import time

from budgetd.client import BudgetError, SyncBudgetClient


def main(socket: str, out_path: str, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    client = SyncBudgetClient(socket, retries=0, timeout=5)
    n = 0
    with open(out_path, "a", buffering=1) as out:
        while time.monotonic() < deadline:
            n += 1
            key = f"w{seed}-{n}"
            kind = rng.random()
            # The fate of a hold is drawn once: a retry after a lost answer repeats the same operation (its
            # reserve answers the same hold), never a different one, or a hold committed by an attempt
            # whose answer was lost would be logged as one left open.
            fate = rng.random()
            usage = {"component": f"soak{seed % 4}", "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                     "input_tokens": rng.randrange(10, 2000), "output_tokens": rng.randrange(0, 300)}
            while time.monotonic() < deadline + 30:
                try:
                    if kind < 0.55:
                        client.record(idempotency_key=key, **usage)
                        out.write(f"record {key}\n")
                    elif kind < 0.8:
                        d = client.reserve(idempotency_key=key, max_output_tokens=300, ttl_s=600,
                                           component="soak-hard", model=usage["model"],
                                           input_tokens=usage["input_tokens"])
                        if d.allowed:
                            out.write(f"hold {d.reservation_id}\n")
                            if fate < 0.6:
                                client.commit(d.reservation_id, idempotency_key=f"c-{key}",
                                              **{**usage, "component": "soak-hard"})
                                out.write(f"commit c-{key}\nclosed {d.reservation_id}\n")
                            elif fate < 0.9:
                                client.release(d.reservation_id)
                                out.write(f"closed {d.reservation_id}\n")
                            # else the hold stays open: a restart must not forget it
                    elif kind < 0.95:
                        client.check(component=usage["component"], model=usage["model"],
                                     input_tokens=usage["input_tokens"], max_output_tokens=300)
                    else:
                        client.report(["component"])
                    break
                except BudgetError as exc:
                    if exc.code not in ("unavailable", "busy"):
                        raise  # a bug in this worker, not chaos: fail loudly
                    time.sleep(0.05)  # the daemon is restarting: the same request again, same key
                except OSError:
                    time.sleep(0.05)
    client.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
