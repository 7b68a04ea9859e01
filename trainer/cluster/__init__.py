"""Cluster mode: the GPU work runs on Ray nodes while SQLite and the file store stay on the bot host.

`python -m trainer.cluster` (the dispatcher) runs on the bot host in place of `python -m trainer`. It claims jobs
from the queue like the worker, sends training to a Ray actor on a node with a free GPU (trainer.cluster.training)
and generation to a Ray Serve deployment with adapter-aware routing (trainer.cluster.replica), and writes every
result into the store itself. Nothing here is imported in local mode, so local mode never imports Ray.
"""
