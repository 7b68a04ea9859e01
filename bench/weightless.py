"""Models whose random weights are made while they load, so a real-size model never writes or reads tens of GB.

`write_weightless(pipe, folder)` writes a pipeline's folder as `save_pretrained` would (model_index.json, each
component's config, tokenizers, schedulers), but each weights file is a valid safetensors file whose header lists
every tensor and whose data is a hole (a sparse file: no bytes written, none stored). The pipeline may live on
the meta device (`trainer.families.published.published_pipeline_on_meta`): only shapes and dtypes are read.

`random_weights_on_load()` makes every `safetensors.safe_open` of such a file hand out random tensors of the
listed shapes and dtypes, generated on the GPU when there is one. Everything else is the product's own loading:
`family.load_pipeline` -> diffusers' / transformers' from_pretrained, with bitsandbytes quantizing to NF4 where
the family asks, each tensor as it arrives. Memory and speed do not depend on the values; the values are sane
(1/sqrt(fan_in) for matrices, ones for norm scales, zeros for biases) so nothing overflows.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import torch

MARK = "likeness_random_weights"
REAL_KEYS = "likeness_real_keys"  # tensors written for real (integer buffers): comma-separated
TIED = "likeness_tied"  # JSON {key: first key}: tied weights (one tensor under two names) get the same values
WEIGHTS_FILE = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_TORCH_DTYPES = {name: dtype for dtype, name in _DTYPES.items()}


def write_sparse_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file listing `tensors`; floating-point data is left as a hole, other tensors are written."""
    real = sorted(key for key, tensor in tensors.items()
                  if not tensor.is_floating_point() and tensor.device.type != "meta")
    first_key: dict[int, str] = {}
    tied = {key: first_key.setdefault(id(tensors[key]), key) for key in sorted(tensors)}
    tied = {key: first for key, first in tied.items() if key != first}
    header: dict = {"__metadata__": {"format": "pt", MARK: "1", REAL_KEYS: ",".join(real), TIED: json.dumps(tied)}}
    offset = 0
    for key in sorted(tensors):
        tensor = tensors[key]
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        start = handle.tell()
        for key in real:
            handle.seek(start + header[key]["data_offsets"][0])
            handle.write(tensors[key].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        handle.truncate(start + offset)


def write_weightless(pipe, folder: Path) -> Path:
    """`folder` as pipe.save_pretrained would write it, with sparse weights (see the module's docstring)."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}-writing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pipe.save_config(staging)  # model_index.json
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = staging / name
        if isinstance(component, ModelMixin):
            component.save_config(target)
            write_sparse_safetensors(target / WEIGHTS_FILE["diffusers"], component.state_dict(keep_vars=True))
        elif isinstance(component, PreTrainedModel):
            component.config.save_pretrained(target)
            write_sparse_safetensors(target / WEIGHTS_FILE["transformers"], component.state_dict(keep_vars=True))
        else:  # tokenizers, schedulers, feature extractors: small, written as they are
            component.save_pretrained(target)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def _random_tensor(key: str, shape: list[int], dtype: torch.dtype, device) -> torch.Tensor:
    where = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=where).manual_seed(zlib.crc32(key.encode()))
    last = key.rsplit(".", 1)[-1]
    if not dtype.is_floating_point:
        tensor = torch.zeros(shape, dtype=dtype, device=where)
    elif len(shape) >= 2:
        fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
        tensor = torch.empty(shape, dtype=dtype, device=where).normal_(0.0, fan_in ** -0.5, generator=generator)
    elif last in {"weight", "scale", "gamma", "g"}:
        tensor = torch.ones(shape, dtype=dtype, device=where)  # norm scales
    else:
        tensor = torch.zeros(shape, dtype=dtype, device=where)  # biases, shifts
    return tensor.to(device if device not in (None, "") else "cpu")


class _RandomSlice:
    def __init__(self, real_slice, key: str, device):
        self._real, self._key, self._device = real_slice, key, device

    def __getattr__(self, name):
        return getattr(self._real, name)  # get_shape, get_dtype

    def __getitem__(self, index):
        dtype = _TORCH_DTYPES[self._real.get_dtype()]
        return _random_tensor(self._key, list(self._real.get_shape()), dtype, self._device)[index]


class _RandomHandle:
    """A safe_open handle of a weightless file: the real header, random data."""

    def __init__(self, real, device, real_keys: set[str], tied: dict[str, str]):
        self._real, self._device, self._real_keys, self._tied = real, device, real_keys, tied

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._real, name)  # keys, metadata, offset_keys, ...

    def get_slice(self, key: str):
        real_slice = self._real.get_slice(key)
        if key in self._real_keys:
            return real_slice
        return _RandomSlice(real_slice, self._tied.get(key, key), self._device)

    def get_tensor(self, key: str) -> torch.Tensor:
        if key in self._real_keys:
            return self._real.get_tensor(key)
        return self.get_slice(key)[...]

    def get_tensors(self) -> dict[str, torch.Tensor]:
        return {key: self.get_tensor(key) for key in self._real.keys()}


@contextlib.contextmanager
def random_weights_on_load():
    """While active, every safe_open of a weightless file (write_weightless) gives random tensors. Replaces
    safe_open wherever a loaded module holds it (safetensors, safetensors.torch, transformers, diffusers)."""
    import diffusers.models.modeling_utils  # noqa: F401 - loaded first, so their references are replaced too
    import safetensors
    import safetensors.torch
    import transformers.modeling_utils  # noqa: F401

    original = safetensors.safe_open

    def safe_open(filename, framework="pt", device="cpu", **kwargs):
        real = original(filename, framework=framework, device=device, **kwargs)
        metadata = real.metadata() or {}
        if metadata.get(MARK) != "1":
            return real
        real_keys = set(filter(None, metadata.get(REAL_KEYS, "").split(",")))
        return _RandomHandle(real, device, real_keys, json.loads(metadata.get(TIED) or "{}"))

    holders = [module for module in list(sys.modules.values())
               if module is not None and getattr(module, "safe_open", None) is original]
    for module in holders:
        module.safe_open = safe_open
    try:
        yield
    finally:
        for module in list(sys.modules.values()):  # also modules imported meanwhile
            if module is not None and getattr(module, "safe_open", None) is safe_open:
                module.safe_open = original
