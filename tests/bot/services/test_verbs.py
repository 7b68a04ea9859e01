"""One table of commands: Discord's forms in service text, rewritten into console verbs for the console."""

import re

import pytest

from bot.services.verbs import COMMANDS, console, for_console, slash


@pytest.mark.parametrize(("text", "expected"), [
    ("Run `/train subject:rraj` to train.", "Run `train --subject rraj` to train."),
    ("add them with /photos add, then /status shows progress", "add them with photos add, then status shows progress"),
    ("train them together with /train-family.", "train them together with train-family."),
    ("or /cancel it, then try again", "or cancel it, then try again"),
    ("`/cancel job:12`", "`cancel 12`"),
    ("run /forget again", "run forget --yes again"),
])
def test_discord_commands_in_service_text_become_console_verbs(text, expected):
    assert for_console(text) == expected


@pytest.mark.parametrize("text", ["wrote out/gen1-1.png", "see data/train/status.txt", "a/b", "1/2 steps",
                                  "Measuring likeness 2/6", "/trainer is not a command"])
def test_paths_fractions_and_other_slashes_are_left_alone(text):
    assert for_console(text) == text


def test_every_command_round_trips_from_its_discord_form_to_its_console_form():
    for key, (discord_form, _) in COMMANDS.items():
        fields = {name: f"x{n}" for n, name in enumerate(re.findall(r"\{(\w+)\}", discord_form))}
        assert for_console(slash(key, **fields)) == console(key, **fields), key
