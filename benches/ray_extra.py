"""Workloads of benches/actor_calls.rs that Ray's `ray microbenchmark` does not have, measured on
Ray the same way (1 s of warm-up, then 4 rounds of at least 2 s; the figure is the mean rate):
actor creation (100 actors, first call answered on each), 1:n and n:n actor calls with n = 4,
and put/get of an 800 MiB payload. Prints one JSON object: {"workloads": [{"name", "per_s"}]}.

Run by benches/compare_ray.sh inside its throwaway Ray venv.
"""

import json
import sys
import time

import numpy as np
import ray


@ray.remote(num_cpus=0)
class Server:
    def small_value(self):
        return b"ok"


@ray.remote(num_cpus=0)
class Caller:
    def __init__(self, servers):
        self.servers = servers

    def batch(self, n):
        refs = [s.small_value.remote() for s in self.servers for _ in range(n)]
        ray.get(refs)

    def round_robin(self, n):
        servers = self.servers
        ray.get([servers[i % len(servers)].small_value.remote() for i in range(n)])


def rate(per_call, work, round_s=2.0):
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < 1:
        work()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(4):
        start = time.perf_counter()
        done = 0
        while time.perf_counter() - start < round_s:
            for _ in range(step):
                work()
            done += step
        rates.append(per_call * done / (time.perf_counter() - start))
    return float(np.mean(rates))


def main():
    round_s = 0.5 if "--quick" in sys.argv else 2.0
    ray.init(logging_level="ERROR")
    results = []

    def record(name, per_s):
        print(f"{name:<40} {per_s:>14.1f}", file=sys.stderr)
        results.append({"name": name, "per_s": per_s})

    def create_100():
        actors = [Server.remote() for _ in range(100)]
        ray.get([a.small_value.remote() for a in actors])
        for a in actors:
            ray.kill(a)

    record("actor_creation", rate(100, create_100, round_s))

    n = 4
    servers = [Server.remote() for _ in range(n)]
    ray.get([s.small_value.remote() for s in servers])
    client = Caller.remote(servers)
    record(
        "1_n_actor_calls_async_n4",
        rate(5000 * n, lambda: ray.get(client.batch.remote(5000)), round_s),
    )
    clients = [Caller.remote(servers) for _ in range(n)]
    record(
        "n_n_actor_calls_async_n4",
        rate(
            5000 * n,
            lambda: ray.get([c.round_robin.remote(5000) for c in clients]),
            round_s,
        ),
    )

    payload = np.full(800 * 1024 * 1024, 7, dtype=np.uint8)

    def put_get():
        ref = ray.put(payload)
        got = ray.get(ref)
        assert got.nbytes == payload.nbytes
        del ref, got

    record("put_get_gigabytes", rate(800 / 1024, put_get, round_s))
    ray.shutdown()
    print(json.dumps({"workloads": results}))


if __name__ == "__main__":
    main()
