"""Sampler names (as users and A1111 know them) mapped onto diffusers' scheduler classes.

Users choose by our names (DDIM, PNDM, Euler, Euler a, DPM++ 2M); PNG metadata gets A1111's own names
(A1111_SAMPLER_NAMES): diffusers' PNDM as the SD pipelines configure it (skip_prk_steps) is the pseudo linear
multistep method A1111 calls PLMS, and FLUX's flow-matching Euler is what A1111-style UIs (Forge) call Euler.

Every scheduler is built with `from_config` from the base model's own scheduler config, so timestep spacing, beta
schedule and prediction type stay those the model was trained with. FLUX is a flow-matching model: diffusers'
DDIM/PNDM/Euler/DPM++ classes assume a noise-prediction schedule, so every name maps to its
FlowMatchEulerDiscreteScheduler and the job gets a warning when the user asked for another one (the bot's option
validation already says the same before queueing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
)

SCHEDULER_CLASSES: dict[str, type] = {
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
}
# The names users choose by.
SAMPLER_LABELS = {"ddim": "DDIM", "pndm": "PNDM", "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M"}
# The names A1111 writes in its `Sampler:` field, for each of ours.
A1111_SAMPLER_NAMES = {"ddim": "DDIM", "pndm": "PLMS", "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M"}
FLOW_MATCHING_LABEL = "Euler"


class UnknownSchedulerError(ValueError):
    """A scheduler name the worker does not know; the message is one sentence listing the choices."""


@dataclass(frozen=True)
class SchedulerChoice:
    name: str  # what was asked for
    label: str  # what was used, by A1111's name, as written into PNG metadata
    warning: str | None = None


def choose_scheduler(name: str | None, family_base: str, base_config: Any = None) -> SchedulerChoice:
    """Validate a scheduler name for a family ("sd15", "sdxl" or "flux"); None keeps the pipeline's default
    (`base_config`, the model's scheduler config, names it in the label)."""
    if name is not None and name not in SCHEDULER_CLASSES:
        choices = ", ".join(SAMPLER_LABELS.values())
        raise UnknownSchedulerError(f"The scheduler {name!r} is not one this worker knows; choose one of {choices}.")
    if family_base == "flux":
        warning = None
        if name not in (None, "euler"):
            warning = (f"FLUX samples with its own flow-matching scheduler, so {SAMPLER_LABELS[name]} "
                       "was not used.")
        return SchedulerChoice(name or "euler", FLOW_MATCHING_LABEL, warning)
    if name is None:
        return SchedulerChoice("default", default_label(base_config) if base_config else "default")
    return SchedulerChoice(name, A1111_SAMPLER_NAMES[name])


def default_label(base_config: Any) -> str:
    """A1111's name for the scheduler a model's config names (PLMS for SD 1.5's PNDMScheduler)."""
    by_class = {cls: A1111_SAMPLER_NAMES[name] for name, cls in SCHEDULER_CLASSES.items()}
    return by_class.get(_default_class(base_config), base_config.get("_class_name", "default"))


def build_scheduler(choice: SchedulerChoice, base_config: Any, family_base: str):
    """A fresh scheduler for one request (schedulers keep per-call state, so none is shared between calls)."""
    if family_base == "flux":
        return FlowMatchEulerDiscreteScheduler.from_config(base_config)
    if choice.name == "default":
        return _default_class(base_config).from_config(base_config)
    scheduler_class = SCHEDULER_CLASSES[choice.name]
    if scheduler_class is DPMSolverMultistepScheduler:
        # DPM++ 2M as A1111 names it: second-order multistep DPM-Solver++.
        return scheduler_class.from_config(base_config, algorithm_type="dpmsolver++", solver_order=2)
    return scheduler_class.from_config(base_config)


def _default_class(base_config: Any) -> type:
    import diffusers

    return getattr(diffusers, base_config["_class_name"], PNDMScheduler)
