"""Validation of generation options. Each check takes whatever the user typed (an int from Discord, a string from
the console, None when omitted) and returns a value in range or raises ServiceError with a specific sentence."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from bot.services.errors import ServiceError
from intake.family_specs import family_spec

SEED_LIMIT = 2**32  # seeds are 32-bit unsigned, as in A1111 and Civitai
MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MAX_COUNT = 4
SIZE_MULTIPLE = 16  # FLUX packs 2x2 latents of the 8x VAE; SD accepts it too
SCHEDULERS = ("ddim", "pndm", "euler", "euler_a", "dpmpp_2m")
SCHEDULER_LABELS = {"ddim": "DDIM", "pndm": "PNDM", "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M"}
# The pipelines' own default schedulers, so the worker does not swap one unless asked.
DEFAULT_SCHEDULER = {"sd15": "pndm", "sdxl": "euler", "flux": "euler"}
BASE_SIZE = {"sd15": 512, "sdxl": 1024, "flux": 1024}
TINY_BASE_SIZE = 64
EXACT_AREA_TOLERANCE = 0.25  # an exact-ratio size may differ this much in area from the family's base size
# width:height of each preset; the area stays near base x base.
ASPECTS = {"square": (1, 1), "portrait": (3, 4), "landscape": (4, 3), "tall": (9, 16), "wide": (16, 9)}
_ASPECT_ALIASES = {"1:1": "square", "3:4": "portrait", "4:3": "landscape", "9:16": "tall", "16:9": "wide"}
_SCHEDULER_ALIASES = {
    "ddim": "ddim", "pndm": "pndm", "plms": "pndm", "euler": "euler", "eulera": "euler_a", "eulerancestral": "euler_a",
    "dpmpp2m": "dpmpp_2m", "dpmsolvermultistep": "dpmpp_2m", "dpm2m": "dpmpp_2m",
}
_MAX_ECHO = 24
# Plain ASCII digits only: int() and float() accept other scripts' digits and spaces that users cannot see.
_INTEGER = re.compile(r"[+-]?[0-9]{1,100}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})")


@dataclass(frozen=True)
class SamplingOptions:
    """Validated options, ready for generations.params."""

    width: int
    height: int
    aspect: str
    steps: int
    guidance: float
    scheduler: str
    count: int
    seed: int
    seed_was_random: bool
    warnings: tuple[str, ...] = ()

    def as_params(self) -> dict[str, Any]:
        return {
            "width": self.width, "height": self.height, "aspect": self.aspect, "steps": self.steps,
            "guidance": self.guidance, "scheduler": self.scheduler, "count": self.count,
        }


def _echo(value: Any) -> str:
    text = str(value)
    text = "".join(ch for ch in text if ch.isprintable() and ch != "`")
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 1] + "\u2026"


def parse_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ServiceError("bad_option", f"{what} must be a whole number, not {_echo(value)}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip(" \t")):
        return int(value.strip(" \t"))
    raise ServiceError("bad_option", f"{what} must be a whole number, not `{_echo(value)}`.")


def parse_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ServiceError("bad_option", f"{what} must be a number, not {_echo(value)}.")
    if isinstance(value, int) and abs(value) > 10**6:
        number = math.inf if value > 0 else -math.inf
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip(" \t")):
        number = float(value.strip(" \t"))
    else:
        raise ServiceError("bad_option", f"{what} must be a number, not `{_echo(value)}`.")
    if math.isnan(number):
        raise ServiceError("bad_option", f"{what} must be a number, not NaN.")
    return number


def base_family(family: str) -> str:
    return family_spec(family).base


def validate_seed(value: Any) -> int | None:
    """None when omitted (a random seed is drawn later), else 0 <= seed < 2**32."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seed = parse_int(value, "The seed")
    if not 0 <= seed < SEED_LIMIT:
        raise ServiceError(
            "bad_seed", f"The seed must be a whole number from 0 to {SEED_LIMIT - 1} (you gave {_echo(seed)})."
        )
    return seed


def random_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


def validate_steps(value: Any, family: str) -> int:
    if value is None:
        return family_spec(family).defaults.inference_steps
    steps = parse_int(value, "Steps")
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise ServiceError(
            "bad_steps", f"Steps must be between {MIN_STEPS} and {MAX_STEPS} (you gave {_echo(steps)})."
        )
    return steps


def validate_guidance(value: Any, family: str) -> float:
    if value is None:
        return family_spec(family).defaults.guidance_scale
    guidance = parse_float(value, "Guidance")
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise ServiceError(
            "bad_guidance",
            f"Guidance must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g} (you gave {_echo(guidance)}); "
            "7 is a good start.",
        )
    return round(guidance, 3)


def validate_count(value: Any, maximum: int = MAX_COUNT, default: int = MAX_COUNT, what: str = "Count") -> int:
    if value is None:
        return default
    count = parse_int(value, what)
    if not 1 <= count <= maximum:
        raise ServiceError("bad_count", f"{what} must be between 1 and {maximum} (you gave {_echo(count)}).")
    return count


def _alias_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("++", "pp").replace("+", "p"))


def validate_scheduler(value: Any, family: str) -> tuple[str, list[str]]:
    """The canonical scheduler name, and a warning when the family ignores it."""
    base = base_family(family)
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_SCHEDULER[base], []
    name = _SCHEDULER_ALIASES.get(_alias_key(value)) if isinstance(value, str) and len(value) <= 40 else None
    if name is None:
        choices = ", ".join(SCHEDULER_LABELS.values())
        raise ServiceError("bad_scheduler", f"I don't know the scheduler `{_echo(value)}`; choose one of {choices}.")
    if base == "flux" and name != "euler":
        return "euler", ["FLUX samples with its own flow-matching Euler scheduler, so the scheduler option was ignored."]
    return name, []


def _round_to_multiple(value: float) -> int:
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def aspect_size(value: Any, family: str) -> tuple[str, int, int]:
    """(preset name, width, height): multiples of 16 whose area stays near the family's base size squared."""
    name = "square"
    if value is not None and not (isinstance(value, str) and not value.strip()):
        key = str(value).strip().lower() if isinstance(value, str) and len(value) <= 20 else ""
        name = _ASPECT_ALIASES.get(key.replace(" ", ""), key)
        if name not in ASPECTS:
            choices = ", ".join(ASPECTS)
            raise ServiceError("bad_aspect", f"I don't know the aspect `{_echo(value)}`; choose one of {choices}.")
    base = TINY_BASE_SIZE if family_spec(family).tiny else BASE_SIZE[base_family(family)]
    width, height = _exact_size(ASPECTS[name], base) or _nearest_size(ASPECTS[name], base)
    return name, width, height


def _nearest_size(ratio_wh: tuple[int, int], base: int) -> tuple[int, int]:
    ratio = ratio_wh[0] / ratio_wh[1]
    return _round_to_multiple(base * math.sqrt(ratio)), _round_to_multiple(base / math.sqrt(ratio))


def _exact_size(ratio_wh: tuple[int, int], base: int) -> tuple[int, int] | None:
    """The preset's exact ratio in multiples of 16 (1:1, 3:4, 4:3 always; 3:4 is 48x64 on the tiny models), with
    the area nearest base squared; None when no such size comes within EXACT_AREA_TOLERANCE of it (9:16)."""
    unit_w, unit_h = ratio_wh[0] * SIZE_MULTIPLE, ratio_wh[1] * SIZE_MULTIPLE
    scale = max(1, round(math.sqrt(base * base / (unit_w * unit_h))))
    width, height = unit_w * scale, unit_h * scale
    return (width, height) if abs(width * height / (base * base) - 1) <= EXACT_AREA_TOLERANCE else None


def sampling_options(
    family: str, *, seed: Any = None, aspect: Any = None, count: Any = None, steps: Any = None,
    guidance: Any = None, scheduler: Any = None, default_count: int = MAX_COUNT,
) -> SamplingOptions:
    """Validate every option; the first bad one raises with its own sentence."""
    chosen_seed = validate_seed(seed)
    aspect_name, width, height = aspect_size(aspect, family)
    scheduler_name, warnings = validate_scheduler(scheduler, family)
    return SamplingOptions(
        width=width, height=height, aspect=aspect_name,
        steps=validate_steps(steps, family),
        guidance=validate_guidance(guidance, family),
        scheduler=scheduler_name,
        count=validate_count(count, default=default_count),
        seed=random_seed() if chosen_seed is None else chosen_seed,
        seed_was_random=chosen_seed is None,
        warnings=tuple(warnings),
    )
