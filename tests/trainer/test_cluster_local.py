"""Cluster mode's parts that need no cluster: local mode never touches Ray, the supervisor's switch, the private
network warning, the node column in /status and /admin queue, and the node watcher's record of joins and leaves."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from bot import render
from bot.services.jobs import job_view
from bot.supervisor import WorkerSupervisor
from storage import jobs
from storage.cluster_nodes import ClusterNode, read_cluster_nodes
from storage.db import connect
from storage.files import FileStore
from storage.settings import Settings
from trainer.cluster.__main__ import main as dispatcher_main
from trainer.cluster.network import cluster_host, is_private_host, warn_if_public
from trainer.cluster.nodes import NodeWatcher

LOCAL_RUN = textwrap.dedent("""
    import json, sys

    class NoRay:  # as if Ray were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError("ray is not installed")
            return None

    sys.meta_path.insert(0, NoRay())
    import bot.__main__, bot.app, bot.supervisor  # the whole bot side
    from storage import generations, jobs
    from storage.settings import Settings
    from trainer.__main__ import build_worker

    settings = Settings(data_dir=sys.argv[1], model_family="tiny-sd15", device="cpu", worker_poll_s=0.05)
    worker = build_worker(settings, owner="local")
    params = {"width": 64, "height": 64, "steps": 1, "guidance": 5.0, "scheduler": "euler", "count": 1,
              "style": None, "strength": None, "source_index": None, "scale": None, "headshot_prompts": None,
              "greeting": None, "layout": None, "aspect": "square"}
    from storage import subjects
    subjects.ensure_user(worker.conn, 1, "someone")
    gen = generations.create_generation(worker.conn, user_id=1, kind="imagine", prompt="a lighthouse",
                                        negative_prompt="", seed=1, params=params, adapters=[], subject_ids=[])
    job_id = jobs.enqueue_job(worker.conn, "generate", {"generation_id": gen}, user_id=1)
    worker.run(until_idle=True)
    job = jobs.get_job(worker.conn, job_id)
    loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
    print(json.dumps({"state": job.state, "error": job.error, "ray_modules": loaded}))
""")


@pytest.mark.slow
def test_a_local_mode_run_works_without_ray_and_never_imports_it(tmp_path):
    done = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(tmp_path / "data")], capture_output=True,
                          text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["state"] == "succeeded", report["error"]
    assert report["ray_modules"] == []


def test_the_supervisor_starts_the_dispatcher_only_when_a_cluster_is_configured(tmp_path):
    local = WorkerSupervisor(Settings(data_dir=tmp_path), db=None)
    cluster = WorkerSupervisor(Settings(data_dir=tmp_path, cluster_address="ray://10.0.0.2:10001"), db=None)
    assert local._command("w1")[-4:] == ["-m", "trainer", "--owner", "w1"]
    assert cluster._command("w1")[-4:] == ["-m", "trainer.cluster", "--owner", "w1"]


def test_a_cluster_address_off_the_private_network_is_warned_about(caplog):
    assert cluster_host("ray://head.lan:10001") == "head.lan" and cluster_host("auto") is None
    assert is_private_host("10.1.2.3") and is_private_host("192.168.1.20") and is_private_host("100.101.1.2")
    assert not is_private_host("8.8.8.8")
    with caplog.at_level(logging.WARNING, logger="trainer.cluster.network"):
        assert warn_if_public("ray://8.8.8.8:10001")
        assert not warn_if_public("ray://10.0.0.5:10001") and not warn_if_public("auto")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "8.8.8.8" in warnings[0] and "private network" in warnings[0]


def test_the_dispatcher_refuses_to_start_without_a_cluster_address(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LIKENESS_CLUSTER_ADDRESS", raising=False)
    assert dispatcher_main([]) == 2
    assert "LIKENESS_CLUSTER_ADDRESS" in capsys.readouterr().err


def test_status_and_the_admin_queue_name_the_node_running_a_job(tmp_path):
    settings = Settings(data_dir=tmp_path)
    conn, store = connect(settings.database_path), FileStore(settings.store_dir)
    running = jobs.enqueue_job(conn, "generate", {"generation_id": 1})
    waiting = jobs.enqueue_job(conn, "generate", {"generation_id": 2})
    claimed = jobs.claim_next_job(conn, "dispatcher", 30.0)
    assert claimed.id == running
    assert jobs.set_node(conn, running, "dispatcher", "gpu-box/1a2b3c4d")
    assert not jobs.set_node(conn, running, "someone-else", "elsewhere")  # only the lease owner
    views = [job_view(conn, store, jobs.get_job(conn, job_id)) for job_id in (running, waiting)]
    assert [view.node for view in views] == ["gpu-box/1a2b3c4d", None]
    text = render.jobs_view(views, render.Style.PLAIN, with_owner=True)
    assert text.count("on node gpu-box/1a2b3c4d") == 1


def test_the_node_watcher_logs_joins_and_leaves_and_writes_them_for_the_admins(tmp_path, caplog):
    seen = {"a": ClusterNode("box-a/aaaa", 1.0)}
    watcher = NodeWatcher("GPU", tmp_path, read_nodes=lambda resource: dict(seen))
    with caplog.at_level(logging.WARNING, logger="trainer.cluster.nodes"):
        assert [(c.event, c.node) for c in watcher.check()] == [("joined", "box-a/aaaa")]
        seen["b"] = ClusterNode("box-b/bbbb", 2.0)
        del seen["a"]
        assert sorted((c.event, c.node) for c in watcher.check()) == [("joined", "box-b/bbbb"), ("left", "box-a/aaaa")]
        assert watcher.check() == []
    assert sum("cluster node" in r.getMessage() for r in caplog.records) == 3
    recorded = read_cluster_nodes(tmp_path)
    assert [n.label for n in recorded.nodes] == ["box-b/bbbb"]
    assert [(c.event, c.node) for c in recorded.changes] == [
        ("joined", "box-a/aaaa"), ("joined", "box-b/bbbb"), ("left", "box-a/aaaa")]
    view = render.cluster_view(recorded, render.Style.PLAIN)
    assert "box-b/bbbb (2 GPU)" in view and "Node box-a/aaaa left" in view


def test_no_cluster_file_means_no_cluster_lines(tmp_path):
    assert read_cluster_nodes(tmp_path) is None and render.cluster_view(None) == ""
    (tmp_path / "cluster-nodes.json").write_text("{not json")
    assert read_cluster_nodes(tmp_path) is None
