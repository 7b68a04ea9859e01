"""Which function runs each job kind in the worker, and what the worker does while idle."""

from trainer.serving.job import class_images_job, evict_unusable_adapters_when_idle, run_generation_job
from trainer.train_job import run_training_job

HANDLERS = {
    "train": run_training_job,
    "generate": run_generation_job,
    "class_images": class_images_job,
}

# Run by the worker when the queue is empty (at most every few seconds).
IDLE_TASKS = (evict_unusable_adapters_when_idle,)
