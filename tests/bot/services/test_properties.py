"""Property tests: consent against a simple model of ownership and grants, and fuzzing of every validator."""

from __future__ import annotations

import asyncio
import math
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.services import ImagineOptions, ServiceError, Services
from bot.services.cards import LAYOUTS, MAX_GREETING_CHARS, clean_greeting, validate_layout
from bot.services.params import (
    ASPECTS, MAX_COUNT, MAX_GUIDANCE, MAX_STEPS, MIN_GUIDANCE, MIN_STEPS, SCHEDULERS, SEED_LIMIT, aspect_size,
    base_family, sampling_options, validate_count, validate_guidance, validate_scheduler, validate_seed,
    validate_steps,
)
from bot.services.prompts import MAX_PROMPT_CHARS, clean_prompt, find_trigger_mentions
from storage import consent, generations
from storage.db import AsyncDatabase
from storage.files import FileStore
from tests.bot.services.conftest import add_subject, give_adapter, make_settings, requester

USERS = (1, 2, 3)
GUILDS = (None, 50, 51)
TRIGGERS = ("zqvad", "kzyb", "qxtop", "bzhuk", "fqjeb")
FAMILIES = ("sd15", "sdxl", "flux", "tiny-sd15", "tiny-sdxl", "tiny-flux")

grant_strategy = st.tuples(
    st.integers(0, len(TRIGGERS) - 1), st.one_of(st.sampled_from(USERS).map(lambda u: ("user", u)),
                                                 st.sampled_from(GUILDS[1:]).map(lambda g: ("guild", g))))


def model_may_use(owner: int, grants: set, user: int, guild: int | None, index: int) -> bool:
    return owner == user or (index, ("user", user)) in grants or (guild is not None and (index, ("guild", guild)) in grants)


async def consent_scenario(owners, grants, user, guild, mentioned, revoked) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = make_settings(Path(folder))
        async with await AsyncDatabase.open(config.database_path) as db:
            services = Services.build(config, db, FileStore(config.store_dir))
            for index, owner in enumerate(owners):
                subject = await db.run(add_subject, owner, TRIGGERS[index])
                await db.run(give_adapter, services.store, subject)
            for index, (kind, target) in grants:
                share = {"user_id": target} if kind == "user" else {"guild_id": target}
                if kind == "user" and target == owners[index]:
                    continue  # owners need no grant (and sharing with yourself is refused)
                await services.sharing.share(requester(owners[index]), TRIGGERS[index], **share)
            effective = {(i, t) for i, t in grants if not (t[0] == "user" and t[1] == owners[i])}
            prompt = " and ".join(f"{TRIGGERS[i]} person" for i in mentioned) + " at the seaside"
            allowed = [model_may_use(owners[i], effective, user, guild, i) for i in mentioned]
            try:
                queued = await services.imagine.imagine(requester(user, guild), ImagineOptions(prompt))
            except ServiceError as error:
                first_forbidden = next(i for i, ok in zip(mentioned, allowed, strict=True) if not ok)
                assert error.code == "unknown_trigger" and f"`{TRIGGERS[first_forbidden]}`" in error.message
                assert not all(allowed)
                event("refused")
                return
            assert all(allowed)
            event("allowed: own only" if all(owners[i] == user for i in mentioned) else "allowed: through a grant")
            assert queued.subjects == tuple(dict.fromkeys(TRIGGERS[i] for i in mentioned))
            generation = await db.run(generations.get_generation, queued.generation_id)
            for index in set(mentioned) & {i for i, _ in revoked}:
                for _, target in [g for g in revoked if g[0] == index]:
                    await db.run(lambda c, i=index, t=target: consent.revoke_access(
                        c, c.execute("SELECT id FROM subjects WHERE trigger = ?", (TRIGGERS[i],)).fetchone()[0],
                        **({"user_id": t[1]} if t[0] == "user" else {"guild_id": t[1]})))
            still = effective - set(revoked)
            expected = all(model_may_use(owners[i], still, user, guild, i) for i in mentioned)
            # The worker's check before it generates: a revoked grant stops the queued job too.
            assert await db.run(consent.may_use_all, user, generation.guild_id, generation.subject_ids) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    owners=st.lists(st.sampled_from(USERS), min_size=1, max_size=len(TRIGGERS)),
    grants=st.lists(grant_strategy, max_size=8),
    user=st.sampled_from(USERS), guild=st.sampled_from((None, 50, 50, 51)),
    picks=st.lists(st.integers(0, len(TRIGGERS) - 1), min_size=1, max_size=2),
    revoke_picks=st.lists(st.integers(0, 5), max_size=3),
)
def test_imagine_resolves_only_subjects_the_requester_may_use(owners, grants, user, guild, picks, revoke_picks):
    grants = [(i, target) for i, target in grants if i < len(owners)]
    mentioned = [i % len(owners) for i in picks]
    revoked = [grants[i] for i in revoke_picks if i < len(grants)]
    asyncio.run(consent_scenario(owners, grants, user, guild, mentioned, revoked))


anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=50),
    st.from_regex(r"\s*[+-]?\d{1,30}(\.\d{0,5})?\s*", fullmatch=True), st.binary(max_size=8),
    st.lists(st.integers(), max_size=2), st.decimals(allow_nan=True),
)


def outcome(fn, *args):
    try:
        return fn(*args)
    except ServiceError as error:
        assert error.code and error.message and "\n" not in error.message
        return None


@given(value=anything, family=st.sampled_from(FAMILIES))
def test_option_validators_accept_in_range_values_or_raise_service_error(value, family):
    if (seed := outcome(validate_seed, value)) is not None:
        assert 0 <= seed < SEED_LIMIT
    if (steps := outcome(validate_steps, value, family)) is not None:
        assert 1 <= steps <= MAX_STEPS
    if (guidance := outcome(validate_guidance, value, family)) is not None:
        assert 0 <= guidance <= MAX_GUIDANCE and math.isfinite(guidance)
    if (count := outcome(validate_count, value)) is not None:
        assert 1 <= count <= MAX_COUNT
    if (scheduler := outcome(validate_scheduler, value, family)) is not None:
        assert scheduler[0] in SCHEDULERS
    if (size := outcome(aspect_size, value, family)) is not None:
        assert size[1] % 16 == 0 and size[2] % 16 == 0 and size[1] >= 16 and size[2] >= 16
    if (layout := outcome(validate_layout, value)) is not None:
        assert layout in ("portrait", "landscape", "border")


@given(family=st.sampled_from(FAMILIES), seed=anything, aspect=anything, count=anything, steps=anything,
       guidance=anything, scheduler=anything)
def test_sampling_options_are_valid_together(family, seed, aspect, count, steps, guidance, scheduler):
    options = outcome(lambda: sampling_options(family, seed=seed, aspect=aspect, count=count, steps=steps,
                                               guidance=guidance, scheduler=scheduler))
    if options is not None:
        params = options.as_params()
        assert 0 <= options.seed < SEED_LIMIT and params["scheduler"] in SCHEDULERS
        assert 1 <= params["count"] <= MAX_COUNT and params["width"] % 16 == 0


# The fuzzing above only checks what comes back when something does; these check that valid input is accepted
# (a validator that refused everything would pass the fuzzing) and that out-of-range input is refused.
@given(family=st.sampled_from(FAMILIES), seed=st.integers(0, SEED_LIMIT - 1), steps=st.integers(MIN_STEPS, MAX_STEPS),
       count=st.integers(1, MAX_COUNT), guidance=st.floats(MIN_GUIDANCE, MAX_GUIDANCE), as_text=st.booleans())
def test_option_validators_accept_every_in_range_value(family, seed, steps, count, guidance, as_text):
    typed = (lambda value: f" {value} ") if as_text else (lambda value: value)  # slash options arrive as text
    assert validate_seed(typed(seed)) == seed
    assert validate_steps(typed(steps), family) == steps
    assert validate_count(typed(count)) == count
    assert validate_guidance(typed(f"{guidance:.3f}") if as_text else guidance, family) == pytest.approx(
        round(guidance, 3), abs=1e-3)


@given(family=st.sampled_from(FAMILIES), scheduler=st.sampled_from(SCHEDULERS), aspect=st.sampled_from(tuple(ASPECTS)),
       layout=st.sampled_from(tuple(LAYOUTS)))
def test_every_named_choice_is_accepted(family, scheduler, aspect, layout):
    name, notes = validate_scheduler(scheduler.upper(), family)
    if base_family(family) == "flux":  # FLUX has one scheduler; another choice is replaced and the user told
        assert (name, bool(notes)) == ("euler", scheduler != "euler")
    else:
        assert (name, notes) == (scheduler, [])
    assert aspect_size(f" {aspect.title()} ", family)[0] == aspect
    assert validate_layout(layout.upper()) == layout
    options = sampling_options(family, seed=str(7), aspect=aspect, count="2", steps=None, guidance=None,
                               scheduler=scheduler)
    assert (options.seed, options.as_params()["count"]) == (7, 2)


@given(family=st.sampled_from(FAMILIES), below=st.integers(max_value=-1), above=st.integers(min_value=1))
def test_out_of_range_values_are_refused_with_their_own_code(family, below, above):
    for value in (below, SEED_LIMIT - 1 + above):
        assert refusal(validate_seed, value) == "bad_seed"
    for value in (MIN_STEPS - 1 + min(below + 1, 0), MAX_STEPS + above):
        assert refusal(validate_steps, value, family) == "bad_steps"
    for value in (below + 1, MAX_COUNT + above):
        assert refusal(validate_count, value) == "bad_count"
    for value in (MIN_GUIDANCE - above, MAX_GUIDANCE + above):
        assert refusal(validate_guidance, value, family) == "bad_guidance"


def refusal(fn, *args) -> str:
    with pytest.raises(ServiceError) as error:
        fn(*args)
    return error.value.code


@given(st.text(st.characters(min_codepoint=0x30, max_codepoint=0x24F, whitelist_categories=("L", "N")), min_size=1,
               max_size=40),
       st.text(" \t\n", max_size=3))
def test_prompt_and_greeting_cleaning_accept_plain_words(word, spacing):
    assert clean_prompt(f"{spacing}a photo of {word}{spacing}") == unicodedata.normalize("NFKC", f"a photo of {word}")
    assert clean_greeting(f"Happy holidays from {word}!{spacing}") == unicodedata.normalize(
        "NFKC", f"Happy holidays from {word}!")


def visible(text: str) -> bool:
    return not any(unicodedata.category(ch).startswith("C") and ch != "\n" for ch in text)


@given(st.text(max_size=1500))
def test_prompt_cleaning_returns_visible_bounded_text_or_a_service_error(raw):
    prompt = outcome(clean_prompt, raw)
    if prompt is not None:
        assert prompt and len(prompt) <= MAX_PROMPT_CHARS and visible(prompt) and "\n" not in prompt
        find_trigger_mentions(prompt, {"zqvad"})  # never raises on any text


@given(st.one_of(st.text(max_size=300), anything))
def test_greeting_cleaning_returns_short_visible_text_or_a_service_error(raw):
    greeting = outcome(clean_greeting, raw)
    if greeting is not None:
        assert greeting.strip() and len(greeting) <= MAX_GREETING_CHARS and visible(greeting)
        assert greeting.count("\n") <= 2


@settings(max_examples=25, deadline=None)
@given(st.fixed_dictionaries({
    "prompt": st.one_of(st.text(max_size=80), st.just("zqvad person")), "seed": anything, "count": anything,
    "steps": anything, "guidance": anything, "scheduler": st.one_of(st.none(), st.text(max_size=12)),
    "aspect": st.one_of(st.none(), st.text(max_size=10)), "negative_prompt": st.one_of(st.none(), st.text(max_size=30)),
    "style": st.one_of(st.none(), st.text(max_size=10)),
}))
def test_imagine_never_fails_with_anything_but_a_service_error(options):
    async def scenario():
        with tempfile.TemporaryDirectory() as folder:
            config = make_settings(Path(folder))
            async with await AsyncDatabase.open(config.database_path) as db:
                services = Services.build(config, db, FileStore(config.store_dir))
                subject = await db.run(add_subject, 1, "zqvad")
                await db.run(give_adapter, services.store, subject)
                queued = None
                try:
                    queued = await services.imagine.imagine(requester(1), ImagineOptions(**options))
                except ServiceError as error:
                    assert error.message
                if queued is not None:
                    generation = await db.run(generations.get_generation, queued.generation_id)
                    assert 0 <= generation.seed < SEED_LIMIT and generation.params["count"] <= MAX_COUNT

    asyncio.run(scenario())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, SEED_LIMIT - 1), count=st.integers(1, MAX_COUNT), scheduler=st.sampled_from(SCHEDULERS),
       aspect=st.sampled_from(tuple(ASPECTS)))
def test_imagine_queues_every_valid_request(seed, count, scheduler, aspect):
    async def scenario():
        with tempfile.TemporaryDirectory() as folder:
            config = make_settings(Path(folder))
            async with await AsyncDatabase.open(config.database_path) as db:
                services = Services.build(config, db, FileStore(config.store_dir))
                subject = await db.run(add_subject, 1, "zqvad")
                await db.run(give_adapter, services.store, subject)
                options = ImagineOptions("zqvad person at the beach", seed=str(seed), count=count,
                                         scheduler=scheduler, aspect=aspect)
                queued = await services.imagine.imagine(requester(1), options)
                generation = await db.run(generations.get_generation, queued.generation_id)
                assert (generation.seed, generation.params["count"]) == (seed, count)
                assert queued.subjects == ("zqvad",)

    asyncio.run(scenario())
