"""What the subcommands share: the settings and the project read from the environment, the plain-name argument type."""

from __future__ import annotations

import argparse
import re

from cosmos_assets.layout import ProjectLayout, name_problem
from cosmos_assets.settings import Settings

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def plain_name(value: str) -> str:
    """An argparse type for shot and prompt names: they become folder names and partition keys."""
    if not _PLAIN_NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a plain name: use letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    problem = name_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{value[:40]!r}... is not a plain name: it {problem}")
    return value


def settings_from_env() -> Settings:
    return Settings.from_env()


def layout_from_env() -> ProjectLayout:
    return ProjectLayout(root=settings_from_env().root)
