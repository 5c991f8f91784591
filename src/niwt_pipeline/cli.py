"""The project's ``kedro run``: Kedro's own command, with input errors reported as one
message.

A bad input (a file, line, key or class that is not what was expected; a parameter that
does not validate; an output of an earlier pipeline that is missing) stops the run with
one message that says what is wrong, where, and how to fix it, and exit code 2. The full
traceback goes to ``logs/last_error.log`` (the message gives the path), so nothing is lost
for a bug report. Any other exception is a bug and keeps its traceback. Kedro loads this
module's ``cli`` group and lets its ``run`` replace the built-in one.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import traceback
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from niwt_pipeline.core.errors import InputError

#: Where the traceback of the last input error is written (relative to the project).
ERROR_LOG = Path("logs") / "last_error.log"
#: The exit code of a run stopped by an input error.
INPUT_ERROR_EXIT = 2


def input_error_of(exc: BaseException) -> BaseException | None:
    """The input error behind ``exc`` (itself, or an exception it was raised from or
    during), or None when ``exc`` is not caused by bad input.

    Input errors are the project's :class:`InputError` and Kedro's parameter validation
    errors; a Kedro ``DatasetError`` counts when an input error caused it, and a JSON file
    that does not parse becomes an :class:`InputError` naming it.
    """
    from kedro.validation import ParameterValidationError

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    chain: list[BaseException] = []
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        if isinstance(current, InputError | ParameterValidationError):
            return current
        stack.extend([current.__cause__, current.__context__])
    damaged = next((e for e in chain if isinstance(e, json.JSONDecodeError)), None)
    if damaged is not None:
        files = (re.search(r"filepath=(?:\w*Path\()?'?([^,)'\s]+)", str(e)) for e in chain)
        path = next((m.group(1) for m in files if m), "a JSON file")
        return InputError(
            f"{path}: not valid JSON ({damaged}); the file is damaged (cut short?): delete it "
            "and run the pipeline that writes it again"
        )
    return None


def _message(error: BaseException) -> str:
    if isinstance(error, InputError):
        return str(error).strip()
    problems = parameter_problems(str(error))  # Kedro's parameter validation
    listed = "\n".join(f"  - {p}" for p in problems) or f"  {str(error).strip()}"
    return (
        f"parameters that do not validate:\n{listed}\n"
        "Fix the value in conf/<env>/parameters_<block>.yml or in --params."
    )


def parameter_problems(text: str) -> list[str]:
    """``<block>.<key>: <what is wrong>`` for each pydantic error in the text of a Kedro
    ``ParameterValidationError`` (which lists, per parameter block, pydantic's report: a
    location line, then the message line with ``[type=...]``)."""
    problems, block = [], "?"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        named = re.search(r"Parameter '([^']+)'", line)
        if named:
            block = named.group(1)
            continue
        message = re.match(r"\s+(.*?)\s*\[type=", line)
        if message and i > 0:
            where = lines[i - 1].strip()
            what = re.sub(r"^(Value|Assertion) error, ", "", message.group(1))
            problems.append(f"{block}.{where}: {what}")
    return problems


def _check_pipeline_names(pipelines: list[str] | None, pipeline: str | None) -> None:
    """Refuse pipeline names the registry does not have, listing the ones it has.

    Raises:
        InputError: naming the unknown pipelines and every registered one.
    """
    from kedro.framework.project import pipelines as registry

    asked = [*(pipelines or []), *([pipeline] if pipeline else [])]
    if not asked:
        return
    known = sorted(registry)
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise InputError(
            f"--pipelines: no pipeline named {', '.join(map(repr, unknown))}; the registered "
            f"pipelines are {', '.join(known)}"
        )


class _FriendlyRun(click.Command):
    """Kedro's ``run``; an input error ends it with one message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            _check_pipeline_names(ctx.params.get("pipelines"), ctx.params.get("pipeline"))
            return super().invoke(ctx)
        except Exception as exc:
            error = input_error_of(exc)
            if error is None:
                raise
            log = _write_traceback(exc)
            click.secho(f"Error: {_message(error)}", fg="red", err=True)
            click.echo(f"(the full traceback is in {log})", err=True)
            ctx.exit(INPUT_ERROR_EXIT)


def _write_traceback(exc: BaseException) -> Path:
    path = ERROR_LOG.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        text = "".join(traceback.format_exception(exc))
        path.write_text(f"{stamp}\n{text}", encoding="utf-8")
    except OSError:  # a read-only project still gets the message
        pass
    return path


#: Shown when ``--params`` cannot be parsed (a list, a value with a comma).
PARAMS_HINT = (
    "--params splits its value at every comma, so it cannot carry a list of several values "
    "(e.g. ingestion.classes) or a value containing a comma (e.g. a path). Put such values in "
    "a run config file and run `kedro run --config=run.yml`; run.yml:\n"
    "  run:\n    params:\n      ingestion:\n        classes: [cat, dog]\n"
    "      predict:\n        images: /photos/a,b\n(add `env: <env>` under run: for an environment) "
    "(see the README, Configuration)."
)


def _with_params_hint(option: click.Parameter) -> click.Parameter:
    """A copy of Kedro's ``--params`` option whose parse error ends with :data:`PARAMS_HINT`."""
    parse = option.callback

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(ctx, param, value) if parse else value
        except click.UsageError as exc:
            raise click.UsageError(f"{exc.message}\n{PARAMS_HINT}", ctx) from None

    hinted = copy.copy(option)
    hinted.callback = callback
    return hinted


@click.group(name="niwt-pipeline")
def cli() -> None:
    """niwt-pipeline's commands (they replace Kedro's built-in ones of the same name)."""


cli.add_command(
    _FriendlyRun(
        name="run",
        params=[_with_params_hint(p) if p.name == "params" else p for p in kedro_run.params],
        callback=kedro_run.callback,
        help=kedro_run.help,
        short_help=kedro_run.short_help,
        context_settings=kedro_run.context_settings,
    )
)
