"""Whether training and generation can share the GPU, or must take turns."""

from __future__ import annotations

import logging

from storage.settings import Settings
from intake.family_specs import family_spec

log = logging.getLogger(__name__)

# SDXL (fp16, ~11 GB training) or FLUX (NF4, ~9 GB training) beside a second resident pipeline does not fit a
# 12-16 GB card; SD 1.5 (~5 GB training + ~2.5 GB serving) does.
ROOMY_GPU_BYTES = 24 * 1024**3


def exclusive_gpu(settings: Settings) -> bool:
    if settings.gpu_sharing != "auto":
        return settings.gpu_sharing == "exclusive"
    if family_spec(settings.model_family).base == "sd15" or settings.device == "cpu":
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    index = int(settings.device.split(":")[1]) if settings.device.startswith("cuda:") else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    exclusive = total < ROOMY_GPU_BYTES
    log.info("GPU has %.1f GiB: training and generation %s", total / 1024**3,
             "take turns" if exclusive else "share it")
    return exclusive
