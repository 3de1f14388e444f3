"""Every command's help shows examples, and every example is a command that works.

The examples are read from the help a user sees (``format_help``), so an
example that is only in the source, or a help that lost its section, fails
here. Each one is parsed by the real parser; the cheap ones (the embedded
digits, small sizes) are also run, in a temporary directory with a
temporary data home. The others (real datasets, minutes of work) are
parse-only.
"""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from kernelfit.cli import build_parser, main


def _parsers(parser, path=()):
    """(command path, parser) of the top level and every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = dict(_parsers(build_parser()))


def examples(parser) -> list[str]:
    """The example commands in ``parser``'s help.

    The section starts at a line ``examples:`` and ends at the next line that
    is not indented. Inside it: a line ending in a backslash goes on on the
    next line; a command ends at two spaces or a ``#`` (what follows is its
    description); ``a && b`` is two commands. A word in capitals only
    (``COMMAND``) marks a template, not a command.
    """
    lines = parser.format_help().splitlines()
    if "examples:" not in lines:
        return []
    section = []
    for line in lines[lines.index("examples:") + 1:]:
        if line and not line[0].isspace():
            break
        section.append(line)
    text = re.sub(r"\s*\\\n\s*", " ", "\n".join(section))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("kernelfit "):
            continue
        line = re.split(r"\s{2,}|\s#", line)[0]
        for command in line.split(" && "):
            words = shlex.split(command)
            if not any(re.fullmatch(r"[A-Z]{2,}", w) for w in words):
                found.append(command.strip())
    return found


ALL_EXAMPLES = sorted({ex for parser in PARSERS.values() for ex in examples(parser)})


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: " ".join(p) or "kernelfit")
def test_every_command_shows_examples(path):
    assert examples(PARSERS[path]), f"`kernelfit {' '.join(path)} --help` has no examples"


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_example_parses(example):
    from kernelfit.features import feature_params

    argv = shlex.split(example)[1:]
    args = build_parser().parse_args(argv)  # an unknown option or bad value: SystemExit
    assert getattr(args, "func", None), f"{example!r} names no command"
    # argparse takes any KEY=VALUE; the front end is what knows its parameters
    for item in getattr(args, "feature_param", None) or ():
        assert item.partition("=")[0] in feature_params(args.features), example


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: " ".join(p) or "kernelfit")
def test_each_option_states_its_default_once(path):
    parser = PARSERS[path]
    formatter = parser._get_formatter()
    for action in parser._actions:
        text = formatter._get_help_string(action) if action.help else ""
        shown = (text % {"default": action.default} if "%(default)" in text else text)
        assert shown.count("(default:") <= 1, f"{path} {action.option_strings}: {shown}"
        assert "(default: None)" not in shown, f"{path} {action.option_strings}: {shown}"


# The examples that run in a few seconds each, a group in one fresh directory in order (a
# model saved by the first is read by the next). Anything else is parse-only.
RUN = [
    ("kernelfit run", "kernelfit run --randomize random-labels --n-train 1000"),
    ("kernelfit run --n-train 1000 --save-model digits.kfm",
     "kernelfit predict --model digits.kfm",
     "kernelfit predict --model digits.kfm --n-test 200 --json predict.json"),
    ("kernelfit run --features randconv --filters 64 --feature-param patch_size=6",),
    ("kernelfit plan",),
    ("kernelfit data info digits", "kernelfit data list", "kernelfit data clear features",
     "kernelfit data clear mnist"),
    ("kernelfit sgd linear --n-train 200 --epochs 20",),
    ("kernelfit sgd width --small --out results/sgd-width-small",),
    ("kernelfit sgd net --dataset digits --n-train 500 --max-epochs 5 --out results/sgd-digits",),
    ("kernelfit compare --dataset digits --n-train 300 --n-test 200 --max-epochs 5 "
     "--out results/compare-digits",),
    ("kernelfit expressivity --n 500 --d 20",),
    ("kernelfit sweep --vary n_train=300,600 --vary randomize=none,labels:0.5 "
     "--out results/sweep-digits",),
]
# Not run: `bench solve`'s quick look (~6 s: it probes every backend and measures the
# matmul peak first), and everything on MNIST / CIFAR-10 or at full size.


@pytest.mark.parametrize("group", RUN, ids=lambda g: g[0][10:50])
def test_cheap_examples_run_as_written(group, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path / "data-home"))
    for example in group:
        assert example in ALL_EXAMPLES, f"{example!r} is no longer in any help"
        status = main(shlex.split(example)[1:])
        assert status == 0, f"{example!r} exited {status}: {capsys.readouterr().err[-2000:]}"
