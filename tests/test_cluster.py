"""`digitrec predict --cluster`: reading on a Dask cluster (a local one started here) gives one process's output."""

import json

import pytest

from digitrec import cluster
from conftest import assert_one_line_error, digitrec_cli
from test_batch import N_PHOTOS, photo_dir  # noqa: F401  (a fixture)

distributed = pytest.importorskip("dask.distributed", reason="pip install 'digitrec[cluster]'")


@pytest.fixture(scope="module")
def local_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


def test_the_cluster_reads_what_one_process_reads(local_cluster, photo_dir, capsys):  # noqa: F811
    here = digitrec_cli("predict", photo_dir, "--json", "--jobs", 1, capsys=capsys)
    there = digitrec_cli("predict", photo_dir, "--cluster", local_cluster.scheduler_address, capsys=capsys)
    assert there[0] == here[0] == 1  # one file is not a picture
    assert there[1] == here[1]
    assert len(there[1].splitlines()) == N_PHOTOS
    # Both workers took a share: each loaded the model.
    with distributed.Client(local_cluster) as client:
        loaded = client.run(lambda: __import__("digitrec.batch").batch._reader is not None)
    assert list(loaded.values()) == [True, True]


def test_python_recipe_with_a_client(local_cluster, photo_dir):  # noqa: F811
    with distributed.Client(local_cluster) as client:
        records = list(cluster.read_on_cluster(client, [str(photo_dir / "p000.png"), str(photo_dir / "p017.png")]))
        assert client.status == "running"  # a client that was given is left open
    assert records[0]["file"].endswith("p000.png") and records[0]["text"]
    assert "error" in records[1] and json.dumps(records[1])


def test_no_scheduler_at_the_address(photo_dir, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    status, _, err = digitrec_cli("predict", photo_dir, "--cluster", "tcp://127.0.0.1:9", capsys=capsys)
    assert_one_line_error(status, err, "--cluster tcp://127.0.0.1:9", "cannot reach")
