"""The A1111-style `parameters` text chunk that other tools (A1111, ComfyUI, Civitai, PNG Info viewers) read.

Layout, as the AUTOMATIC1111 web UI writes it:

    <prompt, with a <lora:name:weight> tag per adapter>
    Negative prompt: <negative prompt>
    Steps: 30, Sampler: PLMS, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: sd15,
    Lora hashes: "rraj: 0123456789ab", Hashes: {"lora:rraj": "0123456789ab"}, Version: likeness

The fields always come in that order (extras such as `Denoising strength` between `Model` and `Lora hashes`, in
FIELD_ORDER's order), so the same picture always gets the same text. Sampler names are A1111's own (see
trainer/serving/schedulers.py); seeds are 32-bit unsigned; LoRA hashes are A1111's short hash of the tensor data of
the file A1111 loads (storage/lora_hash.py); `Model hash` appears only for a single-file base checkpoint. `Hashes`
is the JSON object Civitai's uploader and sd-parsers read. Values that contain a comma, colon or newline are
JSON-quoted, as A1111 does. Pillow writes the chunk as tEXt, or as iTXt when the text is not Latin-1 (A1111 does the
same through `PngInfo.add_text`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image, PngImagePlugin

from storage.lora_hash import short_lora_hash

PARAMETERS_KEY = "parameters"
SEED_RANGE = 2**32  # A1111 seeds are 32-bit unsigned
# Extras in the order A1111 writes them; any other extra follows, by name.
FIELD_ORDER = ("Denoising strength", "Hires upscale", "Hires upscaler", "Face refine", "Card layout")
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*(\{[^{}]*\}|"(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_LORA_TAG_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class LoraUse:
    name: str  # a trigger word or a style name
    weight: float
    lora_hash: str  # storage.lora_hash.lora_hash of its file; "" when unknown


@dataclass(frozen=True)
class ImageParameters:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    loras: Sequence[LoraUse] = ()
    extra: Mapping[str, str | float | int] = field(default_factory=dict)  # Denoising strength, Hires upscale...
    model_hash: str | None = None  # A1111's short hash of a single-file base checkpoint; None for a diffusers folder


def quote(value: object) -> str:
    text = str(value)
    if not any(ch in text for ch in ",:\n"):
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}"


def _tag_name(name: str) -> str:
    return _LORA_TAG_NAME.sub("_", name)


def _ordered_extras(extra: Mapping[str, str | float | int]) -> list[tuple[str, object]]:
    known = [key for key in FIELD_ORDER if key in extra]
    others = sorted(key for key in extra if key not in FIELD_ORDER)
    return [(key, _number(extra[key]) if isinstance(extra[key], float) else extra[key]) for key in known + others]


def format_parameters(p: ImageParameters) -> str:
    tags = " ".join(f"<lora:{_tag_name(l.name)}:{_number(l.weight)}>" for l in p.loras)
    lines = [f"{p.prompt} {tags}".strip() if tags else p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    fields: list[tuple[str, object]] = [
        ("Steps", p.steps), ("Sampler", p.sampler), ("CFG scale", _number(p.cfg_scale)), ("Seed", p.seed),
        ("Size", f"{p.width}x{p.height}"), *([("Model hash", p.model_hash)] if p.model_hash else []),
        ("Model", p.model), *_ordered_extras(p.extra),
    ]
    hashed = [(_tag_name(l.name), short_lora_hash(l.lora_hash)) for l in p.loras if l.lora_hash]
    text = ", ".join(f"{key}: {quote(value)}" for key, value in fields)
    if hashed:
        text += ", Lora hashes: " + quote(", ".join(f"{name}: {short}" for name, short in hashed))
        text += ", Hashes: " + json.dumps({f"lora:{name}": short for name, short in hashed}, ensure_ascii=False)
    lines.append(text + ", Version: likeness")
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, str]:
    """Read a `parameters` text back: the prompt, the negative prompt and every `Key: value` field."""
    *head, last = text.strip().split("\n")
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in head:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    result = {"Prompt": "\n".join(prompt_lines), "Negative prompt": "\n".join(negative_lines)}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        result[key.strip()] = value
    return result


def png_bytes(image: Image.Image, parameters: str | None, *, optimize: bool = False) -> bytes:
    """The image as PNG with its `parameters` chunk."""
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text(PARAMETERS_KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=optimize)
    return buffer.getvalue()


def read_parameters(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.text.get(PARAMETERS_KEY)
