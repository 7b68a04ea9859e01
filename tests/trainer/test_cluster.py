"""Cluster mode on a simulated 2-node Ray cluster (CPU, tiny-sd15): training and generation run on the nodes while
the database and the store stay here. One cluster and one dispatcher serve the whole module; the test that removes
a node runs last."""

from __future__ import annotations

import asyncio
import os

import pytest
import ray
import torch
from ray import serve
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from safetensors.torch import load_file

from bot.supervisor import WorkerSupervisor
from storage import adapters, consent, files, jobs, subjects
from storage.db import AsyncDatabase
from storage.files import generation_root
from tests.trainer.cluster_fixtures import (
    TOKEN,
    enqueue_imagine,
    enqueue_training,
    make_cluster_world,
    shutdown,
    start_cluster,
    start_dispatcher,
    wait_for_job,
)
from tests.corpus import camera_jpeg
from tests.trainer.job_fixtures import add_subject
from trainer.cluster.replica import APPLICATION, DEPLOYMENT
from trainer.cluster.training import training_actor
from trainer.serving.requests import CONSENT_MESSAGE

pytestmark = pytest.mark.slow
OWNER, FRIEND = 1, 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cluster, nodes = start_cluster()
    world = make_cluster_world(tmp_path_factory.mktemp("cluster") / "data", cluster, nodes)
    try:
        start_dispatcher(world)
        yield world
    finally:
        shutdown(world)


@pytest.fixture(scope="module")
def trained(world):
    """OWNER's subject, trained on the cluster without interruption: (subject, adapter, job)."""
    subject = add_subject(world, OWNER, "rraj", photo_bytes=[("camera.jpg", camera_jpeg())])
    job = wait_for_job(world.conn, enqueue_training(world, [subject.id], OWNER))
    assert job.state == "succeeded", job.error
    return subject, adapters.get_adapter(world.conn, job.result["adapter_id"]), job


def test_a_training_job_runs_on_a_node_and_its_adapter_lands_in_the_local_store(world, trained):
    subject, adapter, job = trained
    assert job.result["node"] and job.result["resumed_from"] is None
    assert world.store.sha256(adapter.path) == adapter.sha256
    assert load_file(world.store.resolve(adapter.path))  # a real safetensors file with tensors
    assert job.result["preview_path"] and world.store.exists(job.result["preview_path"])  # streamed back
    assert not world.store.exists(files.job_root(OWNER, job.id) + "/checkpoints")  # scratch removed at the end
    assert (job.step, job.total) == (24, 24)


def test_a_generation_job_renders_on_a_replica_and_is_published_here(world, trained):
    subject, adapter, _ = trained
    gen_id, job_id = enqueue_imagine(world, OWNER, "rraj person on the moon", [(subject, adapter)])
    job = wait_for_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    outputs = job.result["outputs"]
    assert len(outputs) == 1 and world.store.exists(outputs[0])
    assert job.result["node"] and job.result["replica"]


def test_repeated_requests_for_an_adapter_stay_on_the_replica_that_holds_it(world, trained):
    subject, adapter, _ = trained
    status = serve.status().applications[APPLICATION].deployments[DEPLOYMENT]
    assert status.replica_states.get("RUNNING") == 2  # another replica is free the whole time
    replicas = []
    for index in range(5):
        _, job_id = enqueue_imagine(world, OWNER, f"rraj person, picture {index}", [(subject, adapter)])
        job = wait_for_job(world.conn, job_id)
        assert job.state == "succeeded", job.error
        replicas.append(job.result["replica"])
    assert len(set(replicas[1:])) == 1 and replicas[1] == replicas[0], replicas


def test_unsharing_while_the_job_is_on_a_remote_node_stops_it(world, trained):
    subject, adapter, _ = trained
    subjects.ensure_user(world.conn, FRIEND, "friend")
    consent.grant_access(world.conn, subject.id, user_id=FRIEND)
    gen_id, job_id = enqueue_imagine(world, FRIEND, "rraj person at the beach", [(subject, adapter)],
                                     steps=60, count=4)
    wait_for_job(world.conn, job_id, until=lambda job: job.state == "running" or job.finished)
    consent.revoke_access(world.conn, subject.id, user_id=FRIEND)
    job = wait_for_job(world.conn, job_id)
    assert job.state == "failed" and job.error == CONSENT_MESSAGE
    assert world.store.list_files(generation_root(FRIEND, gen_id)) == []


def test_no_node_ever_sees_the_discord_token(world, trained):
    assert world.settings.discord_token.get_secret_value() == TOKEN  # the dispatcher holds it
    actor = training_actor(world.settings)
    reports = [ray.get(actor.environment.remote(), timeout=120)]
    ray.kill(actor)
    reports += [world.dispatcher.gateway.handle.environment.remote().result(timeout_s=120) for _ in range(4)]
    for report in reports:
        assert not report["has_token"] and "LIKENESS_DISCORD_TOKEN" not in report["likeness_variables"]
        assert not report.get("has_settings_token")
    for node in world.gpu_nodes:  # any process on any node: no token in any variable
        probe = _probe_environment.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, False))
        assert ray.get(probe.remote(), timeout=120) is False


@ray.remote(num_cpus=0)
def _probe_environment() -> bool:
    return any(TOKEN in value for value in os.environ.values())


def test_cancel_reaches_a_training_job_on_its_node_and_nothing_is_kept(world, trained):
    subject, _, _ = trained
    job_id = enqueue_training(world, [subject.id], OWNER, steps=400)
    running = wait_for_job(world.conn, job_id, until=lambda job: job.finished or job.step >= 2)
    assert running.state == "running" and running.node, running.error
    assert jobs.request_cancel(world.conn, job_id) == "requested"
    job = wait_for_job(world.conn, job_id)
    assert job.state == "cancelled" and job.step < 400
    assert not world.store.exists(files.job_root(OWNER, job_id))  # previews and shipped checkpoints removed


async def test_the_bot_supervisor_runs_the_dispatcher_process_and_stops_it_cleanly(world, trained):
    world.dispatcher.request_stop()  # the process takes over from the in-process dispatcher for this test
    world.dispatcher.join(60)
    subject, adapter, _ = trained
    _, job_id = enqueue_imagine(world, OWNER, "rraj person in a snowstorm", [(subject, adapter)])
    db = await AsyncDatabase.open(world.settings.database_path)
    supervisor = WorkerSupervisor(world.settings, db, stop_timeout_s=120)
    supervisor.start()
    try:
        job = await asyncio.to_thread(wait_for_job, world.conn, job_id)
        assert job.state == "succeeded", job.error
        assert supervisor.running and supervisor.state.starts == 1
    finally:
        await supervisor.stop()
        await db.close()
        start_dispatcher(world)
    assert supervisor.state.last_exit_code == 0


def test_removing_the_node_that_trains_resumes_elsewhere_with_identical_weights(world, trained):
    subject, reference, _ = trained
    job_id = enqueue_training(world, [subject.id], OWNER)
    checkpoints = files.job_root(OWNER, job_id) + "/checkpoints"
    running = wait_for_job(world.conn, job_id, until=lambda job: job.finished or (
        job.node is not None and world.store.exists(checkpoints) and world.store.list_files(checkpoints)))
    assert running.state == "running", running.error
    world.cluster.remove_node(world.node_for(running.node), allow_graceful=False)
    job = wait_for_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    assert job.result["resumed_from"] and job.result["resumed_from"] >= 4
    assert job.result["node"] != running.node
    resumed = load_file(world.store.resolve(adapters.get_adapter(world.conn, job.result["adapter_id"]).path))
    uninterrupted = load_file(world.store.resolve(reference.path))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)
    assert jobs.get_job(world.conn, job_id).attempts == 1  # the dispatcher kept the job; no lease was lost
