#!/usr/bin/env python
"""The node's CPU per key in its write and read paths, step by step, plain form against stored form.

    .venv/bin/python benchmarks/profile_write_path.py [--keys 200000] [--batch 4000]

In one process, without gRPC: each step of what a WriteBatch or ReadBatch handler does with a
packed batch (slicing the blobs, key groups, building the RocksDB write batch, ``db.write``,
multi-get, reply values), timed by CPU time (``time.process_time``: robust to other load) over
the same batches, the two forms interleaved. RocksDB's background flushes and compactions are
not in these figures; bench_acceptance.py measures whole processes.
"""
from __future__ import annotations

import argparse
import collections
import operator
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import rocksdict  # noqa: E402

from stateserver.protocol import stored_form, wire  # noqa: E402
from stateserver.protocol.keygroups import KEY_GROUP_PREFIXES, stable_hash  # noqa: E402
from stateserver.shard import layout  # noqa: E402
from stateserver.shard.rocks import RocksResources, RocksTuning  # noqa: E402

MAX_KEY_GROUPS = 128
_FIRST_BYTE = operator.itemgetter(slice(0, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=4000)
    options = parser.parse_args()
    rng = random.Random(1)
    keys = [rng.randbytes(16) for _ in range(options.keys)]
    values = [rng.randbytes(100) for _ in range(options.keys)]
    batches = [(keys[i:i + options.batch], values[i:i + options.batch]) for i in range(0, options.keys, options.batch)]
    plain = [(wire.pack(k), wire.pack(v)) for k, v in batches]
    stored = [(stored_form.stored_keys(k, MAX_KEY_GROUPS), stored_form.stored_values(v)) for k, v in batches]
    costs: dict[str, float] = collections.defaultdict(float)

    def timed(name: str, step: Callable[[], object]) -> object:
        start = time.process_time()
        result = step()
        costs[name] += time.process_time() - start
        return result

    with tempfile.TemporaryDirectory() as tmp:
        resources = RocksResources(RocksTuning())
        db = rocksdict.Rdict(str(Path(tmp) / "db"), resources.options())
        db.set_write_options(resources.write_options())
        for _repeat in range(3):
            for ((pk, pkl), (pv, pvl)), ((sk, skl), (sv, svl)) in zip(plain, stored):
                # plain form, as writes._apply_puts
                ks = timed("plain: unpack", lambda: wire.unpack(pk, pkl))
                vs = timed("plain: unpack", lambda: wire.unpack(pv, pvl))
                groups = timed("plain: key groups (hash)", lambda: [h % MAX_KEY_GROUPS for h in map(stable_hash, ks)])

                def build_plain() -> rocksdict.WriteBatch:
                    writes = rocksdict.WriteBatch(raw_mode=True)
                    put, prefixes, header = writes.put, KEY_GROUP_PREFIXES, layout.HEADER_PLAIN
                    for g, k, v in zip(groups, ks, vs):
                        put(prefixes[g] + k, header + v)
                    return writes

                writes = timed("plain: build write batch", build_plain)
                timed("plain: db.write", lambda: db.write(writes))
                # stored form, as stored_batches.apply_stored_write_batch
                ks = timed("stored: unpack", lambda: wire.unpack(sk, skl))
                vs = timed("stored: unpack", lambda: wire.unpack(sv, svl))
                found = timed("stored: check key groups and headers",
                              lambda: (min(stored_form.key_groups(sk, skl)), max(stored_form.headers(sv, svl))))
                assert found[1] == 0

                def build_stored() -> rocksdict.WriteBatch:
                    writes = rocksdict.WriteBatch(raw_mode=True)
                    collections.deque(map(writes.put, ks, vs), maxlen=0)
                    return writes

                writes = timed("stored: build write batch", build_stored)
                timed("stored: db.write", lambda: db.write(writes))
                # reads of the same keys
                ks = wire.unpack(pk, pkl)
                groups = timed("plain read: key groups (hash)", lambda: [h % MAX_KEY_GROUPS for h in map(stable_hash, ks)])
                prefixed = timed("plain read: prefix keys", lambda: [KEY_GROUP_PREFIXES[g] + k for g, k in zip(groups, ks)])
                got = timed("plain read: multi-get", lambda: db[prefixed])
                out = timed("plain read: strip headers", lambda: [v[1:] if v[0] == 0 else None for v in got])
                timed("plain read: pack reply", lambda: wire.pack(out))
                ks = wire.unpack(sk, skl)
                timed("stored read: check key groups", lambda: min(stored_form.key_groups(sk, skl)))
                got = timed("stored read: multi-get", lambda: db[ks])
                timed("stored read: check headers",
                      lambda: b"".join(map(_FIRST_BYTE, filter(None, got))).count(0) == len(got))
                timed("stored read: pack reply", lambda: wire.pack(got))
        db.close()
    total = options.keys * 3
    print(f"CPU µs per key, {options.keys:,} keys x 3, batches of {options.batch}:")
    for form in ("plain", "stored", "plain read", "stored read"):
        steps = {name: seconds for name, seconds in costs.items() if name.split(":")[0] == form}
        python = sum(s for n, s in steps.items() if "db.write" not in n and "multi-get" not in n)
        for name, seconds in steps.items():
            print(f"  {name:45s} {seconds / total * 1e6:6.3f}")
        print(f"  {form + ': Python around RocksDB, total':45s} {python / total * 1e6:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
