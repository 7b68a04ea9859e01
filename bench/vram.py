"""GPU memory the way a 12 GB card sees it, for bench.realsize and the GPU proof.

torch's `max_memory_allocated` counts the tensors alive at the peak; `max_memory_reserved` adds what the caching
allocator holds (the card cannot give that to anyone else); NVML's figure for this process adds the CUDA context,
cuBLAS/cuDNN workspaces and anything allocated outside torch (bitsandbytes, compiled kernels). A card runs out at
the largest of the three, so goals are judged on `largest_gb`.

    with VramWatch(device) as watch:
        ...
    watch.figures()  # {"max_allocated_gb", "max_reserved_gb", "nvml_process_peak_gb", "nvml_source", "largest_gb"}

On a CPU every figure is None (nothing to report, and nothing invented), so a VRAM goal is then unmeasured.
"""

from __future__ import annotations

import os
import threading
from typing import Any

GIB = 2**30
POLL_S = 0.1


def largest_gb(*figures: float | None) -> float | None:
    """The largest measured figure, or None when none was measured."""
    measured = [figure for figure in figures if figure is not None]
    return max(measured) if measured else None


def vram_figures(allocated: int | None, reserved: int | None, nvml_peak: int | None,
                 nvml_source: str | None) -> dict[str, Any]:
    """Bytes -> the report's GiB figures, with `largest_gb` the one goals are judged on."""
    gib = [None if value is None else round(value / GIB, 2) for value in (allocated, reserved, nvml_peak)]
    return {"max_allocated_gb": gib[0], "max_reserved_gb": gib[1], "nvml_process_peak_gb": gib[2],
            "nvml_source": nvml_source, "largest_gb": largest_gb(*gib)}


class _NvmlProcessMemory:
    """This process's used GPU memory as NVML reports it (pynvml, from nvidia-ml-py); None where unavailable."""

    def __init__(self, index: int):
        self.source = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "nvml process"
        except Exception:  # no pynvml, no driver access: the figure stays unmeasured
            self._nvml = None

    def used(self) -> int | None:
        if self._nvml is None:
            return None
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception:
            return None
        mine = [p.usedGpuMemory for p in processes if p.pid == os.getpid() and p.usedGpuMemory is not None]
        return sum(mine) if mine else None


class VramWatch:
    """Peak allocated, reserved and NVML process memory between enter and exit (NVML is polled)."""

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self._peak_nvml: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: _NvmlProcessMemory | None = None
        self._result: dict[str, Any] | None = None

    def __enter__(self) -> "VramWatch":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._nvml = _NvmlProcessMemory(torch.cuda.current_device())
            self._sample()
            self._thread = threading.Thread(target=self._poll, name="vram-watch", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        used = self._nvml.used() if self._nvml else None
        if used is not None:
            self._peak_nvml = max(self._peak_nvml or 0, used)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._sample()

    def __exit__(self, *exc) -> None:
        if not self.cuda:
            self._result = vram_figures(None, None, None, None)
            return
        import torch

        torch.cuda.synchronize()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._sample()
        self._result = vram_figures(torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(),
                                    self._peak_nvml, self._nvml.source if self._nvml else None)

    def figures(self) -> dict[str, Any]:
        if self._result is None:
            raise RuntimeError("VramWatch.figures() is read after the watched block")
        return dict(self._result)
