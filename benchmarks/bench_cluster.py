"""Dask against Ray Data for reading a folder of photos on a local cluster: start-up and throughput.

Both start 2 worker processes of 1 thread on this machine, read the same photos with the same
per-worker recognizer (digitrec.batch.read_picture), and must give the output of one process.
Start-up: from nothing to a cluster that has run one task. Throughput: pictures/s of the reading.

    pip install 'dask[distributed]' 'ray[data]'
    python benchmarks/bench_cluster.py --photos 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_jobs import make_photos

from digitrec import batch
from digitrec.batch import ReadOptions, read_in_order, tasks_from

WORKERS = 2


def with_dask(tasks) -> tuple[float, float, list[dict]]:
    from dask.distributed import Client, LocalCluster

    from digitrec.cluster import read_on_cluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    client.submit(sum, [1, 2]).result()
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = list(read_on_cluster(client, [t.name for t in tasks]))
    took = time.perf_counter() - t0
    client.close()
    cluster.close()
    return start, took, records


def _ray_read(rows: dict) -> dict:
    if batch._reader is None:
        batch._start_worker(ReadOptions(), worker=False)
    import json

    from digitrec.batch import Task

    out = [json.dumps(batch.read_picture(Task(str(n), Path(n))).record) for n in rows["name"]]
    return {"record": out}


def with_ray(tasks) -> tuple[float, float, list[dict]]:
    import json

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # off by default
    ray.get(ray.remote(lambda: 1).remote())
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"name": t.name} for t in tasks]).map_batches(
        _ray_read, batch_size=batch.CHUNK, concurrency=WORKERS, num_cpus=1)
    records = [json.loads(row["record"]) for row in ds.iter_rows()]
    took = time.perf_counter() - t0
    ray.shutdown()
    return start, took, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_photos(folder, args.photos)
        tasks = tasks_from([str(folder)])
        t0 = time.perf_counter()
        expected = [r.record for r in read_in_order(tasks, ReadOptions(), jobs=1)]
        one = time.perf_counter() - t0
        print(f"{args.photos} photos; one process reads {args.photos / one:.1f}/s")
        print(f"{'engine':<10} {'start s':>8} {'read s':>7} {'photos/s':>9}  same output")
        for name, fn in (("Dask", with_dask), ("Ray Data", with_ray)):
            start, took, records = fn(tasks)
            print(f"{name:<10} {start:>8.1f} {took:>7.1f} {args.photos / took:>9.1f}  {records == expected}")


if __name__ == "__main__":
    main()
