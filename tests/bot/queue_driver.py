"""Plays the worker's side of the jobs table step by step, through the same storage calls the worker makes
(claim_next_job, heartbeat, finish_job, record_adapter, set_outputs), so a test decides exactly when progress
appears. The bot only ever reads the jobs row, so this exercises its whole reporting path. Tests marked
`end_to_end` run the real worker and handlers instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import time

from PIL import Image

from storage import adapters, generations, jobs
from storage.db import connect
from storage.files import FileStore, adapter_root, generation_root, job_root
from storage.settings import Settings

OWNER = "queue-driver"


def png(color=(30, 140, 200), size=64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class QueueDriver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn = connect(settings.database_path)
        self.store = FileStore(settings.store_dir)

    def close(self) -> None:
        self.conn.close()

    def claim(self, kinds=jobs.KINDS) -> jobs.Job:
        job = jobs.claim_next_job(self.conn, OWNER, 600, kinds)
        assert job is not None, "no queued job to claim"
        return job

    def progress(self, job: jobs.Job, step: int, total: int, *, message: str = "training",
                 preview: bytes | None = None) -> None:
        preview_path = None
        if preview is not None:
            preview_path = self.store.write_bytes(f"{job_root(job.user_id, job.id)}/preview-{step}.png", preview)
        beat = jobs.heartbeat(self.conn, job.id, OWNER, 600, step=step, total=total, message=message,
                              eta_at=time.time() + 60 * (total - step), preview_path=preview_path)
        assert beat.alive

    def finish_training(self, job: jobs.Job, *, loss: float = 0.0831, size: int = 0) -> adapters.Adapter:
        rel = f"{adapter_root(job.user_id, job.id)}/pytorch_lora_weights.safetensors"
        data = (b"adapter weights of job %d" % job.id) + os.urandom(size)
        self.store.write_bytes(rel, data)
        adapter = adapters.record_adapter(
            self.conn, owner_id=job.user_id, job_id=job.id, family=self.settings.model_family,
            base_model=self.settings.base_model_id, path=rel, sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data), params={"steps": job.total}, subject_ids=job.payload["subject_ids"],
        )
        plot = self.store.write_bytes(f"{job_root(job.user_id, job.id)}/loss.png", png((10, 10, 10)))
        result = {"adapter_id": adapter.id, "version": adapter.version, "final_loss": loss, "steps": job.total or 4,
                  "metrics": {"identity_similarity": 0.71}, "plot_path": plot, "preview_path": None,
                  "kohya_path": None}
        assert jobs.finish_job(self.conn, job.id, OWNER, "succeeded", result=result)
        return adapter

    def finish_generation(self, job: jobs.Job, *, count: int | None = None, big: bool = False) -> list[str]:
        generation = generations.get_generation(self.conn, job.payload["generation_id"])
        count = count or generation.params.get("count", 1)
        root = generation_root(generation.user_id, generation.id)
        outputs = []
        for index in range(count):
            data = noisy_png(1400) if big else png((40 * index, 100, 200))
            outputs.append(self.store.write_bytes(f"{root}/{index + 1}.png", data))
        grid = self.store.write_bytes(f"{root}/grid.png", png((0, 0, 0))) if count > 1 else None
        assert generations.set_outputs(self.conn, generation.id, outputs)
        result = {"outputs": outputs, "grid": grid, "contact_sheet": None, "seed": generation.seed, "warnings": []}
        assert jobs.finish_job(self.conn, job.id, OWNER, "succeeded", result=result)
        return outputs

    def fail(self, job: jobs.Job, error: str) -> None:
        assert jobs.finish_job(self.conn, job.id, OWNER, "failed", error=error)


def noisy_png(side: int) -> bytes:
    """A PNG that does not compress: several MiB at 1400 px, so tests can push past an upload limit."""
    import numpy as np

    pixels = np.random.default_rng(7).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
