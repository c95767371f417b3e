"""One shape for every ``inferwatch`` command: generated flags, grouped help, one-line errors.

Every setting keeps its flag, metavar, default and help in whichever command takes it, because
they all come from the field in :class:`Settings`; values are parsed by :meth:`Settings.load`,
so a flag and its ``INFERWATCH_*`` twin are judged, and named in errors, the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from inferwatch.middleware import MonitorError, Settings
from inferwatch.middleware.settings import ENV_PREFIX, SETTING_FIELDS, parse_duration, shown_default

if TYPE_CHECKING:
    from inferwatch.middleware.store.database import Store

__all__ = [
    "Command",
    "Duration",
    "Group",
    "IsoTime",
    "load_settings",
    "open_store",
    "option",
    "setting_options",
    "settings_options",
]

_SECTIONS = (("required", "Required"), ("common", "Options"), ("advanced", "Advanced options"))
_FIELDS = {spec.name: spec for spec in SETTING_FIELDS}


class Option(click.Option):
    """An option that knows its help section: required, common or advanced."""

    def __init__(self, *args: Any, level: str = "common", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.level = level


def option(*decls: str, level: str = "common", **kwargs: Any) -> Callable[..., Any]:
    """``click.option`` for an option that is not a setting, placed in a help section."""
    return click.option(*decls, cls=Option, level=level, **kwargs)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def setting_options(
    *names: str, required: Sequence[str] = (), sections: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One ``--flag`` per named setting, as :class:`Settings` describes it.

    Flags default to None so that :func:`load_settings` can tell a flag from its environment
    twin; a ``required`` setting may come from either, and the command checks that it came.
    With ``sections``, the settings :class:`Settings` calls advanced wait for ``--help-all``.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            spec = _FIELDS[name]
            meta = spec.metadata
            env = ENV_PREFIX + name.upper()
            if name in required:
                level, note = "required", f"required; env {env}"
            else:
                level = meta["level"] if sections else "common"
                shown = shown_default(spec)
                note = f"default: {shown}; env {env}" if shown else f"env {env}"
            command = click.option(
                _flag(name),
                name,
                cls=Option,
                level=level,
                default=None,
                metavar=meta["metavar"],
                help=f"{meta['help']} [{note}]",
            )(command)
        return command

    return decorate


def settings_options(
    mode: str, *, required: Sequence[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Every setting of ``mode``: those of all modes and the mode's own."""
    names = [spec.name for spec in SETTING_FIELDS if spec.metadata["modes"] in {"all", mode}]
    names.sort(key=lambda name: name not in required)  # required flags lead the help
    return setting_options(*names, required=required, sections=True)


def load_settings(values: dict[str, Any], *, required: Sequence[str] = ()) -> Settings:
    """Settings from parsed flags, then the environment; a bad or missing one is one line."""
    given = {k: v for k, v in values.items() if k in _FIELDS and v is not None}
    try:
        settings = Settings.load(given, given_as=_flag)
    except MonitorError as exc:
        raise click.UsageError(str(exc)) from exc
    for name in required:
        if getattr(settings, name) is None:
            raise click.UsageError(
                f"Missing setting {name}: pass {_flag(name)} "
                f"{_FIELDS[name].metadata['metavar']} or set {ENV_PREFIX}{name.upper()}."
            )
    return settings


class IsoTime(click.ParamType):
    """An ISO-8601 time such as ``2024-05-01T12:00:00`` (UTC unless it says otherwise)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time such as 2024-05-01T12:00:00", param, ctx)


class Duration(click.ParamType):
    """A duration written as settings are (``90s``, ``5m``, ``1h``), in seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_DUCKDB_MAGIC = b"DUCK"  # bytes 8 to 12 of every DuckDB database file


def open_store(path: str, *, read_only: bool = True, busy_hint: str = "") -> Store:
    """The log store at ``path`` (the ``--db`` flag); anything else is one line naming it."""
    from inferwatch.middleware.store.database import Store

    if not os.path.isfile(path):
        raise click.UsageError(f"Bad value for --db: no log store at {path!r}.")
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head and head[8:12] != _DUCKDB_MAGIC:
        raise click.UsageError(
            f"Bad value for --db: {path!r} is not a DuckDB log store (the file the monitor's "
            "db setting names)."
        )
    try:
        return Store(path, read_only=read_only)
    except MonitorError as exc:
        raise click.UsageError(f"Bad value for --db: {exc}{busy_hint}") from exc


class Command(click.Command):
    """A command whose help lists its options by section; ``--help-all`` adds advanced ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if any(getattr(p, "level", None) == "advanced" for p in self.params):
            self.params.append(
                click.Option(
                    ["--help-all"],
                    is_flag=True,
                    expose_value=False,
                    is_eager=True,
                    callback=_help_all,
                    help="Show every option, the advanced ones too, and exit.",
                )
            )

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        show_all = ctx.meta.get("inferwatch.help_all", False)
        sections: dict[str, list[tuple[str, str]]] = {level: [] for level, _ in _SECTIONS}
        hidden = 0
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            level = getattr(param, "level", "common")
            if level == "advanced" and not show_all:
                hidden += 1
                continue
            sections[level].append(record)
        for level, title in _SECTIONS:
            if sections[level]:
                with formatter.section(title):
                    formatter.write_dl(sections[level])
        if hidden:
            formatter.write_paragraph()
            formatter.write_text(
                f"{hidden} advanced options (limits, timeouts, alerts, health thresholds) are "
                "left out: --help-all lists them, and the README's settings table explains them."
            )


def _help_all(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    ctx.meta["inferwatch.help_all"] = True
    click.echo(ctx.get_help(), color=ctx.color)
    ctx.exit()


class Group(click.Group):
    """The command group: its commands are :class:`Command`, and every error is one line.

    click shows a usage error as three lines (Usage, Try, Error); here it is one line that
    names the flag or setting, on stderr, with exit status 2.
    """

    command_class = Command
    group_class = type

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(2)
        except click.BadParameter as exc:
            click.echo(f"Error: {_bad_parameter(exc)}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _bad_parameter(exc: click.BadParameter) -> str:
    """click's "Invalid value for '--x': ..." in the words settings use: "Bad value for --x"."""
    param = exc.param
    if param is None:
        return _one_line(exc.format_message())
    hint = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    return _one_line(f"Bad value for {hint}: {exc.message}".rstrip(".") + ".")


def _one_line(message: str) -> str:
    return " ".join(message.split())
