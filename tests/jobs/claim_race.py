"""A claiming process for the multi-process race tests (not a test module).

    python claim_race.py GO_FILE LEASE_S

Opens the store, prints "ready", waits until GO_FILE exists (so every process starts claiming
together), claims runs until none is left, and prints the ids it won as one JSON list. It never completes a run, so
a run claimed twice would show up in two lists.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from oikyo.jobs import queue


def main() -> None:
    go_file, lease_s = Path(sys.argv[1]), float(sys.argv[2])
    owner = queue.new_owner()
    from oikyo.store import db

    db.engine()  # open and migrate the store before the start line, so every process races from the same point
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.001)
    won = []
    while True:
        run = queue.claim(owner, lease_s)
        if run is None:
            break
        won.append(run.id)
    print(json.dumps(won))


if __name__ == "__main__":
    main()
