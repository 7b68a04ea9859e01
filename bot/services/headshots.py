"""The curated professional headshot set. The worker receives the resolved prompt strings in
params.headshot_prompts, one image each, and builds the contact sheet."""

from __future__ import annotations

from bot.services.errors import ServiceError

SUBJECT_SLOT = "{subject}"
HEADSHOT_PROMPTS = (
    "professional corporate headshot of {subject}, studio grey seamless backdrop, soft key light, "
    "dark business suit, sharp focus, 85mm portrait lens",
    "{subject} in business attire, office window light, blurred modern office behind, professional profile photo",
    "outdoor headshot of {subject}, smart casual jacket, golden hour light, creamy bokeh background, natural smile",
    "{subject} in a crisp shirt, clean white background, bright even high-key lighting, professional portrait",
    "black and white studio portrait of {subject}, charcoal backdrop, classic loop lighting, tailored blazer",
    "{subject} with arms crossed in a modern co-working space, soft daylight, confident expression, "
    "editorial business portrait",
    "{subject} in a blazer on a city street, shallow depth of field, overcast soft light, approachable smile",
    "{subject}, warm bookshelf background, soft window light, knit sweater, friendly expression, author portrait",
)
HEADSHOT_NEGATIVE = (
    "cartoon, illustration, painting, distorted face, asymmetric eyes, extra fingers, blurry, lowres, "
    "watermark, text, oversaturated"
)
DEFAULT_HEADSHOTS = 4


def headshot_prompts(prompt_name: str, count: int) -> list[str]:
    """The first `count` prompts of the set (validated by the caller), with the subject written in."""
    if not prompt_name.strip():
        raise ServiceError("no_subject", "Say whose headshots to make.")
    return [template.replace(SUBJECT_SLOT, prompt_name) for template in HEADSHOT_PROMPTS[:count]]
