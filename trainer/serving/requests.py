"""A generations row turned into a render plan, after checking again that its requester may use every person in it.

The bot checked consent before queueing; this runs again in the worker right before rendering (and once more before
the result is published), so a grant revoked or a subject forgotten while the job waited stops it. Every refusal
uses the same sentence, which names nobody and does not say whether a subject exists.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from storage import adapters as adapter_rows
from storage import consent, generations, subjects
from storage.files import FileStore, UnsafePathError
from storage.generations import Generation
from trainer.families import family_spec
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.pngmeta import SEED_RANGE
from trainer.serving.schedulers import SAMPLER_LABELS
from trainer.serving.server import Sampling
from trainer.job_api import JobError

KINDS = ("imagine", "reroll", "variation", "upscale", "headshots", "card")
CONSENT_MESSAGE = (
    "You can no longer use one of the people in this picture (its owner stopped sharing it or deleted it), "
    "so it was not made."
)
DEFAULT_VARIATION_STRENGTH = 0.55
DEFAULT_UPSCALE_STRENGTH = 0.35
DEFAULT_UPSCALE_SCALE = 2.0
MAX_SIDE = 4096
MAX_COUNT = 4
MAX_HEADSHOTS = 16


class ConsentRevoked(JobError):
    def __init__(self) -> None:
        super().__init__(CONSENT_MESSAGE)


@dataclass(frozen=True)
class Person:
    """A subject in the picture, in prompt order, with the adapter that knows them."""

    subject_id: int
    trigger: str
    prompt_name: str  # "rraj person"
    source: AdapterSource
    weight: float


@dataclass(frozen=True)
class StyleUse:
    name: str
    source: AdapterSource
    weight: float


@dataclass(frozen=True)
class RenderPlan:
    generation_id: int
    user_id: int
    kind: str
    family: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str | None
    count: int
    people: tuple[Person, ...] = ()
    styles: tuple[StyleUse, ...] = ()
    strength: float | None = None
    scale: float | None = None
    source_key: str | None = None  # store key of the parent picture (variation, upscale)
    headshot_prompts: tuple[str, ...] = ()
    greeting: str | None = None
    layout: str | None = None
    warnings: tuple[str, ...] = ()

    def composition(self) -> list[tuple[AdapterSource, float]]:
        """Every distinct adapter with its weight: people (a family adapter once), then styles."""
        uses: dict[str, tuple[AdapterSource, float]] = {}
        for person in self.people:
            uses.setdefault(person.source.key, (person.source, person.weight))
        for style in self.styles:
            uses.setdefault(style.source.key, (style.source, style.weight))
        return list(uses.values())

    def sampling(self, **changes: Any) -> Sampling:
        base = Sampling(prompt=self.prompt, negative_prompt=self.negative_prompt, width=self.width,
                        height=self.height, steps=self.steps, guidance=self.guidance, seed=self.seed,
                        scheduler=self.scheduler)
        return replace(base, **changes)

    @property
    def output_size(self) -> tuple[int, int]:
        if self.kind == "upscale":
            return upscaled_size(self.width, self.height, self.scale or DEFAULT_UPSCALE_SCALE, self.family)
        return self.width, self.height


def upscaled_size(width: int, height: int, scale: float, family: str) -> tuple[int, int]:
    multiple = family_spec(family).resolution_multiple
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))  # type: ignore


def img2img_steps(steps: int, strength: float) -> int:
    """Steps to ask img2img for, so that at least one denoising step runs at this strength."""
    return max(steps, math.ceil(1 / strength))


# Consent and adapters.
def check_consent(conn: sqlite3.Connection, gen: Generation) -> None:
    if not consent.may_use_all(conn, gen.user_id, gen.guild_id, gen.subject_ids):
        raise ConsentRevoked()


def _people(conn: sqlite3.Connection, store: FileStore, gen: Generation, family: str) -> tuple[Person, ...]:
    people = []
    for entry in gen.adapters:
        if entry.get("kind") != "subject":
            continue
        subject_id, adapter_id = entry.get("subject_id"), entry.get("adapter_id")
        subject = subjects.get_subject(conn, subject_id) if isinstance(subject_id, int) else None
        adapter = adapter_rows.get_adapter(conn, adapter_id) if isinstance(adapter_id, int) else None
        if (subject is None or adapter is None or subject_id not in gen.subject_ids
                or subject_id not in adapter.subject_ids):
            raise ConsentRevoked()
        if adapter.family != family:
            raise JobError(f"This picture needs a {adapter.family} adapter, but the worker now runs {family}; "
                           "make it again with /imagine.")
        source = AdapterSource.for_adapter(adapter.id, adapter.sha256, _stored_path(store, adapter.path))
        people.append(Person(subject.id, subject.trigger, subject.prompt_name, source,
                             _weight(entry.get("weight", 1.0))))
    return tuple(people)


def _styles(conn: sqlite3.Connection, store: FileStore, gen: Generation, family: str) -> tuple[list, list]:
    styles, warnings = [], []
    for entry in gen.adapters:
        if entry.get("kind") != "style":
            continue
        style = generations.get_style(conn, str(entry.get("name", "")))
        if style is None or style.family != family:
            warnings.append(f"The style `{entry.get('name')}` is no longer installed, so it was left out.")
            continue
        source = AdapterSource.for_style(style.id, style.sha256, _stored_path(store, style.path))
        styles.append(StyleUse(style.name, source, _weight(entry.get("weight", style.weight))))
    return styles, warnings


def _stored_path(store: FileStore, key: str):
    try:
        path = store.resolve(key)
    except UnsafePathError:
        raise JobError("An adapter file of this picture is missing; its owner can retrain it with /train.") from None
    if not path.is_file():
        raise JobError("An adapter file of this picture is missing; its owner can retrain it with /train.")
    return path


def _weight(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -4.0 <= float(value) <= 4.0:
        raise JobError("This picture has an adapter weight out of range; make it again with /imagine.")
    return float(value)


# Parameters.
def _number(params: dict, key: str, low: float, high: float, default: Any = None, whole: bool = False):
    value = params.get(key)
    if value is None:
        if default is None:
            raise JobError(f"This picture has no {key} setting; make it again with /imagine.")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high \
            or (whole and int(value) != value):
        raise JobError(f"This picture's {key} setting ({value!r}) is out of range; make it again with /imagine.")
    return int(value) if whole else float(value)


def _size(params: dict, family: str) -> tuple[int, int]:
    multiple = family_spec(family).resolution_multiple
    sizes = []
    for key in ("width", "height"):
        side = _number(params, key, multiple, MAX_SIDE, whole=True)
        sizes.append(max(multiple, side // multiple * multiple))
    return sizes[0], sizes[1]


def _source_key(conn: sqlite3.Connection, gen: Generation, params: dict) -> str:
    parent = generations.get_generation(conn, gen.parent_id) if gen.parent_id is not None else None
    if parent is None or not parent.outputs or parent.user_id != gen.user_id:
        raise JobError("The picture this one starts from was deleted, so it cannot be made; try /imagine.")
    index = _number(params, "source_index", 0, len(parent.outputs) - 1, default=0, whole=True)
    return parent.outputs[index]


def build_plan(conn: sqlite3.Connection, store: FileStore, gen: Generation, family: str) -> RenderPlan:
    """Check consent and every referenced row and file, validate params, and return what to render."""
    if gen.kind not in KINDS:
        raise JobError(f"This worker cannot make {gen.kind!r} pictures.")
    check_consent(conn, gen)
    params = gen.params
    people = _people(conn, store, gen, family)
    styles, warnings = _styles(conn, store, gen, family)
    width, height = _size(params, family)
    values: dict[str, Any] = dict(
        generation_id=gen.id, user_id=gen.user_id, kind=gen.kind, family=family, prompt=gen.prompt,
        negative_prompt=gen.negative_prompt, seed=int(gen.seed) % SEED_RANGE, width=width, height=height,
        steps=_number(params, "steps", 1, 150, whole=True), guidance=_number(params, "guidance", 0.0, 30.0),
        scheduler=_scheduler(params), count=_number(params, "count", 1, MAX_COUNT, default=1, whole=True),
        people=people, styles=tuple(styles), warnings=tuple(warnings),
    )
    if gen.kind in ("variation", "upscale"):
        default = DEFAULT_VARIATION_STRENGTH if gen.kind == "variation" else DEFAULT_UPSCALE_STRENGTH
        values["strength"] = _number(params, "strength", 0.01, 1.0, default=default)
        values["source_key"] = _source_key(conn, gen, params)
    if gen.kind == "upscale":
        values["scale"] = _number(params, "scale", 1.0, 4.0, default=DEFAULT_UPSCALE_SCALE)
        values["count"] = 1
        if max(upscaled_size(width, height, values["scale"], family)) > MAX_SIDE:
            raise JobError(f"The upscaled picture would be larger than {MAX_SIDE} pixels; upscale a smaller one.")
    if gen.kind == "headshots":
        values["headshot_prompts"] = _headshot_prompts(params)
    if gen.kind == "card":
        values.update(_card_params(params), count=1)
    return RenderPlan(**values)


def _scheduler(params: dict) -> str | None:
    name = params.get("scheduler")
    if name is not None and name not in SAMPLER_LABELS:
        choices = ", ".join(SAMPLER_LABELS.values())
        raise JobError(f"This picture asks for an unknown scheduler; make it again with one of {choices}.")
    return name


def _headshot_prompts(params: dict) -> tuple[str, ...]:
    prompts = params.get("headshot_prompts")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_HEADSHOTS \
            or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise JobError("This headshot pack has no prompts; ask for it again with /headshots.")
    return tuple(prompts)


def _card_params(params: dict) -> dict[str, Any]:
    greeting, layout = params.get("greeting"), params.get("layout") or "portrait"
    if not isinstance(greeting, str) or not greeting.strip():
        raise JobError("This card has no greeting; make it again with /card and the words to print.")
    if layout not in ("portrait", "landscape", "border"):
        raise JobError("This card's layout is unknown; choose portrait, landscape or border.")
    return {"greeting": greeting, "layout": layout}
