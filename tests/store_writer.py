"""Child process for the concurrency test: writes N keys to the shared store from T threads."""

import sys
import threading

from label_studio_ml.settings import Settings
from label_studio_ml.store import open_store


def main(worker: str, count: int, threads: int):
    store = open_store(Settings.from_env())  # MODEL_DIR and CACHE_TYPE from the parent

    def write(offset):
        for i in range(offset, count, threads):
            store.set("p1", f"{worker}-{i}", f"value-{worker}-{i}")
            # every writer also touches one shared hot key, the hardest case for locking
            store.set("p1", "hot", worker)

    pool = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
