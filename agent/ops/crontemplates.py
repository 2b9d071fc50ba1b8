"""The cron command allowlist: job templates that render into argument lists.

Each template is a list of argument templates, rendered one by one in a sandboxed Jinja2
environment from the typed, validated parameters (``schemas.cron.TEMPLATE_PARAMS``) plus what
the agent resolved and checked itself (paths under its configured directories). The cron
command is those arguments, each quoted with :func:`shlex.quote` for ``/bin/sh`` (the cron
files set ``SHELL=/bin/sh``), joined by spaces, with every ``%`` escaped as ``\\%`` (cron turns
a bare ``%`` into a newline and feeds the rest to the job's stdin). So a parameter is always
one literal argument: it cannot add a command, a redirect, a substitution or a line.

``freeform`` is the exception: the command is shell text as typed. It is refused unless the
agent's ``cron_freeform_tenants`` lists the command's tenant *and* the signed command carries
an approval by someone other than its requester. The control plane only asks for approvals
where the tenant's policy says so, so a tenant that enables free-form commands must set an
approval policy for CRON_CREATE and CRON_UPDATE (``fleetdeck policies set``); without one the
agent refuses every free-form entry.
"""

from __future__ import annotations

import functools
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

from agent.ops.base import OpsError
from agent.settings import AgentSettings
from schemas.commands import Command
from schemas.cron import (
    BackupDirParams,
    FreeformParams,
    LogrotateParams,
    ScriptParams,
    template_params,
)

#: longest cron line written (Debian's cron reads at most 1000 characters of a command)
MAX_LINE = 1000


@dataclass(frozen=True)
class Arg:
    """One argument, rendered from ``source``; left out when the parameter ``when`` is false."""

    source: str
    when: str | None = None


@dataclass(frozen=True)
class Each:
    """One argument per element of the list parameter ``param``."""

    param: str


Prepare = Callable[[Any, AgentSettings], dict[str, Any]]


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    argv: tuple[Arg | Each, ...]
    prepare: Prepare  # the agent's checks; returns extra variables for rendering


@dataclass(frozen=True)
class Rendered:
    argv: tuple[str, ...] | None  # None for a free-form command
    command: str  # the cron command field, quoted and escaped


@functools.cache
def _environment() -> SandboxedEnvironment:
    # imported on the first template: an agent that never gets a cron command keeps ~2 MB
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def render(template: str, params: dict[str, Any], settings: AgentSettings) -> Rendered:
    """The cron command for ``template`` with ``params``; OpsError names what is refused."""
    try:
        model = template_params(template, params)
    except ValueError as exc:
        raise OpsError(f"params.{exc}") from None
    if isinstance(model, FreeformParams):
        return Rendered(None, cron_escape(model.command))
    spec = TEMPLATES[template]
    argv = render_argv(spec, model, spec.prepare(model, settings))
    return Rendered(argv, command_line(argv))


def render_argv(spec: Template, model: BaseModel, extra: dict[str, Any]) -> tuple[str, ...]:
    values = {**model.model_dump(mode="json"), **extra}
    env = _environment()
    argv: list[str] = []
    for element in spec.argv:
        if isinstance(element, Each):
            argv.extend(env.from_string("{{ item }}").render(item=v)
                        for v in values[element.param])
        elif element.when is None or values[element.when]:
            argv.append(env.from_string(element.source).render(**values))
    return tuple(argv)


def command_line(argv: tuple[str, ...]) -> str:
    """The argument list as one ``/bin/sh`` command line fit for a cron file."""
    line = cron_escape(" ".join(shlex.quote(arg) for arg in argv))
    if len(line) > MAX_LINE - 100:  # room for the schedule and the user
        raise OpsError(f"the command line is longer than {MAX_LINE - 100} characters")
    return line


def cron_escape(text: str) -> str:
    """``text`` with ``%`` escaped for cron. Cron drops the backslash of ``\\%`` and keeps
    every other backslash, so a backslash right before a ``%`` cannot be written at all."""
    if "\\%" in text:
        raise OpsError("a backslash right before '%' cannot be written in a cron line")
    if not text.isprintable():
        raise OpsError("the command must be one printable line")
    return text.replace("%", "\\%")


def check_freeform(command: Command, settings: AgentSettings) -> None:
    """Refuse a free-form entry unless the tenant has it enabled and someone approved it."""
    if command.tenant not in settings.cron_freeform_tenants:
        raise OpsError(f"free-form cron commands are disabled for tenant {command.tenant!r} "
                       "(agent setting cron_freeform_tenants): use a template")
    if any(step.decision == "rejected" for step in command.approvals):
        raise OpsError("free-form cron command: an approver rejected it")
    if not any(step.decision == "approved" and step.actor != command.actor
               for step in command.approvals):
        raise OpsError("free-form cron command without approval: the tenant needs an "
                       "approval policy for CRON_CREATE and CRON_UPDATE")


# -- the agent's checks, per template ---------------------------------------------------------

def under(path: str, roots: list[Path], field: str) -> Path:
    """``path``, if it and what it resolves to (symlinks followed) lie inside one of
    ``roots``; OpsError names the field otherwise."""
    given = Path(path)
    real = Path(os.path.realpath(given))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if given.is_relative_to(root) and real.is_relative_to(real_root):
            return real
    allowed = ", ".join(str(r) for r in roots) or "none configured"
    raise OpsError(f"params.{field}: {path} is not inside an allowed directory ({allowed})")


def _directory(path: str, roots: list[Path], field: str) -> Path:
    real = under(path, roots, field)
    if not real.is_dir():
        raise OpsError(f"params.{field}: {path} is not a directory")
    return real


def _backup(model: BackupDirParams, settings: AgentSettings) -> dict[str, Any]:
    source = _directory(model.source, settings.cron_path_roots, "source")
    dest = _directory(model.dest, settings.cron_path_roots, "dest")
    if dest.is_relative_to(source):
        raise OpsError("params.dest: must not lie inside params.source")
    return {"source": str(source), "dest": str(dest)}


def _logrotate(model: LogrotateParams, settings: AgentSettings) -> dict[str, Any]:
    config = under(model.config, [settings.cron_logrotate_dir], "config")
    if not config.is_file():
        raise OpsError(f"params.config: {model.config} is not a file")
    return {"config": str(config)}


def _healthcheck(model: BaseModel, settings: AgentSettings) -> dict[str, Any]:
    return {}  # the URL's checks are all in its model


def _script(model: ScriptParams, settings: AgentSettings) -> dict[str, Any]:
    path = under(str(settings.cron_script_dir / model.name), [settings.cron_script_dir],
                 "name")
    try:
        info = path.stat()
    except OSError:
        raise OpsError(f"params.name: no script {model.name!r} in "
                       f"{settings.cron_script_dir}") from None
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        raise OpsError(f"params.name: {model.name!r} is not an executable file")
    if info.st_mode & 0o022:
        raise OpsError(f"params.name: {model.name!r} is writable by group or others")
    if os.geteuid() == 0 and info.st_uid != 0:
        raise OpsError(f"params.name: {model.name!r} must be owned by root")
    return {"script": str(path)}


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("backup-dir", "Archive a directory with tar and gzip (replaced on each run)",
             (Arg("/usr/bin/tar"), Arg("--create"), Arg("--gzip"),
              Arg("--file={{ dest }}/{{ name }}.tar.gz"), Arg("--directory={{ source }}"),
              Arg("--"), Arg(".")), _backup),
    Template("logrotate", "Rotate the logs of one logrotate configuration",
             (Arg("/usr/sbin/logrotate"), Arg("--force", when="force"), Arg("{{ config }}")),
             _logrotate),
    Template("curl-healthcheck", "Request a URL; cron mails the error when it fails",
             (Arg("/usr/bin/curl"), Arg("--fail"), Arg("--silent"), Arg("--show-error"),
              Arg("--proto"), Arg("=http,https"), Arg("--output"), Arg("/dev/null"),
              Arg("--max-time"), Arg("{{ timeout_s }}"), Arg("--retry"), Arg("{{ retries }}"),
              Arg("--url"), Arg("{{ url }}")), _healthcheck),
    Template("script", "Run a script from the agent's script directory",
             (Arg("{{ script }}"), Each("args")), _script),
)}
