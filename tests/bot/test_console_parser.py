"""The console parser: real commands parse into verbs and arguments; anything else is one line of error."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.console_parser import VERBS, ParseError, help_text, parse_line


@pytest.mark.parametrize(("line", "verb", "args"), [
    ("train --trigger rraj --class person a.jpg b.png", "train",
     {"photos": ["a.jpg", "b.png"], "trigger": "rraj", "class": "person"}),
    ('imagine "a photo of rraj person as a Van Gogh painting" --seed 7', "imagine",
     {"prompt": ["a photo of rraj person as a Van Gogh painting"], "seed": "7"}),
    ("imagine a photo of rraj person --count=2", "imagine", {"prompt": ["a", "photo", "of", "rraj", "person"],
                                                            "count": "2"}),
    ("share rraj --user 2", "share", {"subject": "rraj", "user": 2}),
    ("share rraj --server", "share", {"subject": "rraj", "server": True}),
    ("as 2", "as", {"user_id": 2}),
    ("photos add rraj c.jpg --caption 'on a beach' --caption 'at work'", "photos add",
     {"subject": "rraj", "photos": ["c.jpg"], "caption": ["on a beach", "at work"]}),
    ("PHOTOS REMOVE rraj 3", "photos remove", {"subject": "rraj", "number": 3}),
    ("forget --yes   # really", "forget", {"yes": True}),
    ("exit", "quit", {}),
    ("variation 12", "variation", {"generation": 12}),
    ("train --subject rraj", "train", {"photos": [], "subject": "rraj"}),
    ("wait 3", "wait", {"job": 3}),
    ("wait", "wait", {}),
])
def test_commands_parse(line, verb, args):
    parsed = parse_line(line)
    assert parsed.verb == verb and parsed.args == args


@pytest.mark.parametrize("line", ["", "   ", "# only a comment", "\t# indented comment"])
def test_blank_lines_and_comments_are_skipped(line):
    assert parse_line(line) is None


@pytest.mark.parametrize(("line", "message"), [
    ('imagine "no end', "no closing quotation"),
    ("launch rockets", "unknown command `launch`"),
    ("photos", "needs one of: add, caption, list, remove"),
    ("share", "not enough arguments"),
    ("as two", "must be a whole number"),
    ("share rraj --user", "needs a value"),
    ("share rraj --friend 3", "has no option `--friend`"),
    ("forget --yes=no", "takes no value"),
    ("export a b", "too many arguments"),
    ("cancel 99999999999999999999999", "must be a whole number"),
])
def test_malformed_lines_say_what_is_wrong(line, message):
    with pytest.raises(ParseError) as caught:
        parse_line(line)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_one_line(line):
    try:
        parsed = parse_line(line)
    except ParseError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 400
    else:
        assert parsed is None or parsed.verb in VERBS


words = st.sampled_from(sorted({w for name in VERBS for w in name.split()} | {"--seed", "--user", "--yes", "--count=",
                                                                            "rraj", "'", '"', "#", "--", "7", "-1"}))


@settings(max_examples=400, deadline=None)
@given(st.lists(words | st.text(max_size=8), max_size=8))
def test_command_shaped_noise_parses_or_fails_with_one_line(parts):
    try:
        parse_line(" ".join(parts))
    except ParseError as exc:
        assert "\n" not in str(exc)


def test_help_covers_every_verb():
    text = help_text()
    assert all(name in text for name in VERBS)
    assert "photos add" in help_text("photos") and "no command" in help_text("nope")


def test_a_trailing_ampersand_runs_the_line_in_the_background():
    queued = parse_line('imagine "a photo of rraj person" --seed 7 &')
    assert queued.background and queued.args == {"prompt": ["a photo of rraj person"], "seed": "7"}
    assert not parse_line("imagine a photo").background
    assert parse_line('imagine "a & b"').args["prompt"] == ["a & b"] and not parse_line('imagine "a & b"').background
    with pytest.raises(ParseError) as caught:
        parse_line("&")
    assert "goes after a command" in str(caught.value)
