"""Cluster mode in the bot: /status and /admin queue name the node running a job, and the admins see the nodes
and their latest joins and leaves (from the file the dispatcher keeps; the bot never imports Ray)."""

import time

import pytest

from storage import jobs, subjects
from storage.cluster_nodes import ClusterNode, NodeChange, write_cluster_nodes
from storage.db import connect
from tests.bot.conftest import texts


def make_admin(world, settings):
    """A host user; SimCord picks user ids, so the id joins the (per-test) admin list after it is known."""
    admin = world.guild.add_member(world.env.create_user("host"))
    settings.admin_user_ids.append(admin.id)
    return admin


@pytest.mark.bot_settings(cluster_address="10.0.0.2:6379")
async def test_status_and_the_admin_queue_show_the_node_and_the_admins_see_the_nodes(world, bot_settings):
    admin = make_admin(world, bot_settings)
    conn = connect(bot_settings.database_path)
    subjects.ensure_user(conn, world.alice.id, "alice")
    jobs.enqueue_job(conn, "train", {"subject_ids": []}, user_id=world.alice.id)
    job = jobs.claim_next_job(conn, "dispatcher", 30.0)
    assert jobs.set_node(conn, job.id, "dispatcher", "gpu-box/1a2b3c4d")
    write_cluster_nodes(bot_settings.data_dir, [ClusterNode("gpu-box/1a2b3c4d", 1.0)], [
        NodeChange(time.time() - 60, "joined", "gpu-box/1a2b3c4d", 1.0),
        NodeChange(time.time() - 5, "left", "old-box/9f8e7d6c", 1.0)])

    status = texts(await world.alice.slash(world.channel, "status"))
    assert "on node gpu-box/1a2b3c4d" in status and "Cluster nodes" not in status
    queue = texts(await admin.slash(world.channel, "admin queue"))
    assert "on node gpu-box/1a2b3c4d" in queue
    assert "Cluster nodes: gpu-box/1a2b3c4d (1 GPU)." in queue
    assert "Node old-box/9f8e7d6c left" in queue and "Node gpu-box/1a2b3c4d joined" in queue


async def test_in_local_mode_the_admin_queue_has_no_cluster_lines(world, bot_settings):
    admin = make_admin(world, bot_settings)
    write_cluster_nodes(bot_settings.data_dir, [ClusterNode("gpu-box/1a2b3c4d", 1.0)], [])  # a stale file
    queue = texts(await admin.slash(world.channel, "admin queue"))
    assert "No jobs" in queue and "Cluster" not in queue and "node" not in queue
