"""Parsing console lines: `imagine "a photo of rraj person" --seed 7` -> ParsedCommand.

One command per line, shell-style quoting (shlex), `#` starts a comment, blank lines are skipped. Every
malformed line raises ParseError with one line of text; nothing else ever escapes `parse_line`.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_CHARS = 20_000


class ParseError(Exception):
    """A line that is not a valid command; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Verb:
    name: str  # one word, or two for sub-commands ("photos add")
    usage: str
    summary: str
    positionals: tuple[str, ...] = ()  # a trailing "*" name takes the rest (a list); "+" needs at least one
    required: int = 0
    options: Mapping[str, str] = field(default_factory=dict)  # --name -> "str" | "int" | "flag" | "list"


@dataclass(frozen=True)
class ParsedCommand:
    verb: str
    args: dict[str, Any]
    background: bool = False  # the line ended with `&`: a script goes on without waiting for its job

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)


_IMAGINE_OPTIONS = {"negative": "str", "seed": "str", "aspect": "str", "count": "str", "steps": "str",
                    "guidance": "str", "scheduler": "str", "style": "str", "out": "str"}
_OUT = {"out": "str"}  # a job's pictures go to this folder instead of the console's --out

VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("help", "help [command]", "list the commands, or explain one", ("topic*",)),
    Verb("quit", "quit", "leave the console"),
    Verb("as", "as USER_ID [--name NAME]", "act as another (local) user, e.g. `as 2` to try sharing (the name is "
         "remembered)",
         ("user_id",), 1, {"name": "str"}),
    Verb("whoami", "whoami", "show the acting user"),
    Verb("train", "train PHOTO... [--trigger T] [--class NOUN] [--name NAME] [--family GROUP] [--caption TEXT]... "
         "| train --subject TRIGGER [PHOTO...]",
         "create or extend a subject from photo files and queue training; --subject retrains from stored photos",
         ("photos*",), 0,
         {"trigger": "str", "class": "str", "name": "str", "family": "str", "caption": "list", "subject": "str"}),
    Verb("train-family", "train-family GROUP", "train one adapter for every subject in your family group",
         ("group",), 1),
    Verb("photos list", "photos list SUBJECT", "list a subject's accepted photos", ("subject",), 1),
    Verb("photos add", "photos add SUBJECT PHOTO... [--caption TEXT]...", "add photos to a subject",
         ("subject", "photos+"), 2, {"caption": "list"}),
    Verb("photos remove", "photos remove SUBJECT NUMBER", "remove one photo (numbers from `photos list`)",
         ("subject", "number"), 2),
    Verb("photos caption", "photos caption SUBJECT NUMBER TEXT...", "set a photo's caption",
         ("subject", "number", "text*"), 2),
    Verb("imagine", "imagine PROMPT... [--negative N] [--seed S] [--aspect A] [--count C] [--steps S] "
         "[--guidance G] [--scheduler S] [--style S] [--out DIR]",
         "generate images; the files go to the console's --out folder, or to this command's --out DIR",
         ("prompt+",), 1, _IMAGINE_OPTIONS),
    Verb("reroll", "reroll GENERATION [--out DIR]", "same settings, new seed", ("generation",), 1, _OUT),
    Verb("variation", "variation GENERATION [INDEX] [--out DIR]", "a variation of one image",
         ("generation", "index"), 1, _OUT),
    Verb("upscale", "upscale GENERATION [INDEX] [--out DIR]", "upscale one image", ("generation", "index"), 1, _OUT),
    Verb("delete", "delete GENERATION", "delete a generation, its stored files and the copies written to out/",
         ("generation",), 1),
    Verb("headshots", "headshots [SUBJECT] [--count N] [--out DIR]", "a pack of professional headshots",
         ("subject",), 0, {"count": "str", **_OUT}),
    Verb("card", "card PROMPT... --greeting TEXT [--layout portrait|landscape|border] [--out DIR]",
         "a holiday card with a typeset greeting", ("prompt+",), 1, {"greeting": "str", "layout": "str", **_OUT}),
    # The console has no server: `--server` is accepted only to take back shares made by older versions.
    Verb("share", "share SUBJECT --user ID", "let another (local) user use a subject", ("subject",), 1,
         {"user": "int", "server": "flag"}),
    Verb("unshare", "unshare SUBJECT --user ID", "take a share back", ("subject",), 1,
         {"user": "int", "server": "flag"}),
    Verb("subjects", "subjects", "your subjects and those shared with you"),
    Verb("styles", "styles", "the installed style LoRAs"),
    Verb("status", "status", "your jobs and their places in the queue"),
    Verb("cancel", "cancel [JOB]", "cancel a job (without a number: your only one, or it asks which)", ("job",), 0),
    Verb("wait", "wait [JOB]", "block until that job (or all of yours) has finished", ("job",), 0),
    Verb("export", "export SUBJECT [--out DIR]", "write a zip of the subject's adapter to the --out folder",
         ("subject",), 1, _OUT),
    Verb("forget", "forget --yes", "delete everything stored about the acting user, and their files in out/", (), 0,
         {"yes": "flag"}),
    Verb("demo-photos", "demo-photos DIR", "write sample photos of one face (scikit-image's astronaut) to DIR",
         ("dir",), 1),
    Verb("admin queue", "admin queue", "every active job (admins; the console's own user 1 is one)"),
    Verb("admin add-style", "admin add-style NAME FILE [--weight W]", "install a style LoRA (admins)",
         ("name", "file"), 2, {"weight": "str"}),
    Verb("admin remove-style", "admin remove-style NAME", "remove a style LoRA (admins)", ("name",), 1),
    Verb("admin limits", "admin limits", "the limits and your usage"),
)}
ALIASES = {"exit": "quit", "q": "quit", "?": "help", "jobs": "status"}
_INT_NAMES = {"user_id", "number", "generation", "index", "job"}
MAX_WHOLE_NUMBER = 2**63 - 1


def _tokens(line: str) -> list[str]:
    if len(line) > MAX_LINE_CHARS:
        raise ParseError(f"that line is too long ({len(line)} characters; the limit is {MAX_LINE_CHARS}).")
    try:
        return shlex.split(line, comments=True, posix=True)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise ParseError(f"could not read that line: {str(exc).lower()}.") from None


def find_verb(tokens: list[str]) -> tuple[Verb, list[str]]:
    first = ALIASES.get(tokens[0].lower(), tokens[0].lower())
    if len(tokens) > 1 and f"{first} {tokens[1].lower()}" in VERBS:
        return VERBS[f"{first} {tokens[1].lower()}"], tokens[2:]
    if first in VERBS:
        return VERBS[first], tokens[1:]
    subs = sorted(name.split(" ", 1)[1] for name in VERBS if name.startswith(first + " "))
    if subs:
        if len(tokens) > 1:
            guess = _closest(tokens[1].lower(), subs)
            if guess:
                raise ParseError(f"`{first}` has no `{_echo(tokens[1])}`; did you mean `{first} {guess}`?")
        raise ParseError(f"`{first}` needs one of: {', '.join(subs)}.")
    guess = _closest(first, [*VERBS, *ALIASES])
    hint = f"did you mean `{guess}`? " if guess else ""
    raise ParseError(f"unknown command `{_echo(tokens[0])}`; {hint}type `help` for the list.")


def _closest(word: str, choices) -> str | None:
    """The choice a typo most likely meant (difflib's ratio, at least 0.75), else None."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return found[0] if found else None


def _echo(text: str, limit: int = 30) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _int(value: str, what: str) -> int:
    text = value.strip()
    if not text.lstrip("+-").isdigit() or not text.isascii() or len(text) > 20:
        raise ParseError(f"{what} must be a whole number, not `{_echo(value)}`.")
    number = int(text)
    if abs(number) > MAX_WHOLE_NUMBER:  # SQLite's integers are 64-bit: a larger id could never match anything
        raise ParseError(f"{what} `{_echo(value)}` is out of range; the largest allowed is {MAX_WHOLE_NUMBER}.")
    return number


def _split_options(verb: Verb, rest: list[str]) -> tuple[list[str], dict[str, Any]]:
    positionals: list[str] = []
    options: dict[str, Any] = {}
    index = 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if not token.startswith("--") or token == "--":
            positionals.append(token)
            continue
        name, has_value, inline = token[2:].partition("=")
        kind = verb.options.get(name)
        if kind is None:
            guess = _closest(name, verb.options)
            hint = f"did you mean `--{guess}`? " if guess else ""
            raise ParseError(f"`{verb.name}` has no option `--{_echo(name)}`; {hint}see `help {verb.name}`.")
        if kind == "flag":
            if has_value:
                raise ParseError(f"`--{name}` takes no value.")
            options[name] = True
            continue
        if not has_value:
            if index >= len(rest):
                raise ParseError(f"`--{name}` needs a value.")
            inline, index = rest[index], index + 1
        value = _int(inline, f"--{name}") if kind == "int" else inline
        if kind == "list":
            options.setdefault(name, []).append(value)
        else:
            options[name] = value
    return positionals, options


def _bind_positionals(verb: Verb, values: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if len(values) < verb.required:
        raise ParseError(f"not enough arguments; usage: {verb.usage}")
    for position, name in enumerate(verb.positionals):
        if name.endswith(("*", "+")):
            args[name[:-1]] = values[position:]
            return args
        if position < len(values):
            args[name] = _int(values[position], name.replace("_", " ")) if name in _INT_NAMES else values[position]
    if len(values) > len(verb.positionals):
        raise ParseError(f"too many arguments (quote text with spaces); usage: {verb.usage}")
    return args


def parse_line(line: str) -> ParsedCommand | None:
    """The command on this line, or None for a blank line or a comment."""
    if not isinstance(line, str):
        raise ParseError("a command must be text.")
    tokens = _tokens(line)
    background = bool(tokens) and tokens[-1] == "&"
    tokens = tokens[:-1] if background else tokens
    if not tokens:
        if background:
            raise ParseError("`&` goes after a command, e.g. `imagine \"a photo of rraj person\" &`.")
        return None
    verb, rest = find_verb(tokens)
    positionals, options = _split_options(verb, rest)
    args = _bind_positionals(verb, positionals)
    args.update(options)
    return ParsedCommand(verb.name, args, background)


def help_text(topic: str | None = None) -> str:
    if topic:
        key = ALIASES.get(topic.lower(), topic.lower())
        matches = [v for name, v in VERBS.items() if name == key or name.startswith(key + " ")]
        if not matches:
            return f"no command `{_echo(topic)}`; type `help` for the list."
        return "\n".join(f"{v.usage}\n    {v.summary}" for v in matches)
    width = max(len(name) for name in VERBS)
    lines = ["Commands (one per line; quote text with spaces; # starts a comment). Jobs run in the background",
             "at the prompt; in a --script file a line waits for its job unless it ends with `&`:"]
    lines += [f"  {name.ljust(width)}  {verb.summary}" for name, verb in VERBS.items()]
    return "\n".join(lines)
