"""The `cti` command: serve, db, user, import, export, demo-data."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from crm_core.reports.run import REPORT_NAMES
from crm_core.settings import Settings
from recordings.cli import recordings as recordings_cli

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """member-cti: call-centre CTI server and member CRM."""
    ctx.obj = Settings()


main.add_command(recordings_cli)


# ---------------------------------------------------------------- db


@main.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Create or migrate the schema; safe to run any number of times."""
    from crm_core import migrate

    _run(migrate.upgrade(settings.database_url, revision))
    click.echo(f"database at revision {_run(migrate.current_revision(settings.database_url))}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(settings: Settings, revision: str) -> None:
    from crm_core import migrate

    _run(migrate.downgrade(settings.database_url, revision))
    click.echo(f"database at revision {_run(migrate.current_revision(settings.database_url))}")


@db.command("current")
@click.pass_obj
def db_current(settings: Settings) -> None:
    from crm_core import migrate

    click.echo(_run(migrate.current_revision(settings.database_url)) or "empty")


# ---------------------------------------------------------------- users


@main.command("serve")
@click.option("--host", default=None, help="listen address (default CTI_HTTP_HOST)")
@click.option("--port", type=int, default=None, help="listen port (default CTI_HTTP_PORT)")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the agent panel, its API and WebSocket, and the CTI engine (AMI) in one process."""
    from agent_panel.server import serve as run_server

    updates = {k: v for k, v in {"http_host": host, "http_port": port}.items() if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _run(run_server(settings.model_copy(update=updates)))


@main.group()
def user() -> None:
    """Users, roles and org units."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["agent", "supervisor", "crm_staff", "admin"]), required=True)
@click.option("--name", "display_name", default=None)
@click.option("--org-unit", default=None, help="org unit code")
@click.option("--password-env", default=None, help="read the password from this environment variable")
@click.pass_obj
def user_add(
    settings: Settings,
    username: str,
    role: str,
    display_name: str | None,
    org_unit: str | None,
    password_env: str | None,
) -> None:
    """Add a user; the password is prompted for (or read from --password-env), never taken as an argument."""
    from crm_core.cli_ops import add_user

    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            raise click.UsageError(f"environment variable {password_env} is empty")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise click.UsageError("passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        user_id = _run(add_user(settings, username, password, role, display_name, org_unit))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} ({role}) created with id {user_id}")


@user.command("org-unit")
@click.argument("code")
@click.argument("name")
@click.option("--parent", default=None)
@click.option("--kind", type=click.Choice(["company", "department", "team"]), default="department")
@click.pass_obj
def user_org_unit(settings: Settings, code: str, name: str, parent: str | None, kind: str) -> None:
    """Add an org unit under --parent."""
    from crm_core.cli_ops import add_org_unit

    _run(add_org_unit(settings, code, name, parent, kind))
    click.echo(f"org unit {code} created")


# ---------------------------------------------------------------- import / export / demo data


@main.group("import")
def import_() -> None:
    """Bulk imports (CSV in UTF-8 or GBK/GB18030, XLSX)."""


@import_.command("members")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file mapping file columns to member fields",
)
@click.option("--on-duplicate", type=click.Choice(["skip", "update"]), default="skip", show_default=True)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the per-row error report (default FILE.errors.csv)",
)
@click.option("--as", "username", default=None, help="import as this user (owner of the new members)")
@click.option("--encoding", default=None, help="CSV encoding (default: detect UTF-8 / GB18030)")
@click.option("--no-progress", is_flag=True, default=False)
@click.pass_obj
def import_members(
    settings: Settings,
    file: Path,
    mapping: Path | None,
    on_duplicate: str,
    errors_path: Path | None,
    username: str | None,
    encoding: str | None,
    no_progress: bool,
) -> None:
    """Import members; bad rows are reported per row and never stop the good ones."""
    from crm_core.importers.members import import_members_file

    report = _run(
        import_members_file(
            settings,
            file,
            mapping_path=mapping,
            on_duplicate=on_duplicate,
            errors_path=errors_path,
            username=username,
            encoding=encoding,
            progress=not no_progress,
        )
    )
    click.echo(report.summary())
    if report.fatal:
        raise SystemExit(2)


@import_.command("transactions")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, default=False, help="check every row and count the points; write nothing")
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the per-row error report (default FILE.errors.csv)",
)
@click.option("--encoding", default=None, help="CSV encoding (default: detect UTF-8 / GB18030)")
@click.option("--no-progress", is_flag=True, default=False)
@click.pass_obj
def import_transactions(
    settings: Settings, file: Path, dry_run: bool, errors_path: Path | None, encoding: str | None, no_progress: bool
) -> None:
    """Import POS sales and returns into the points ledger; idempotent by transaction id, bad rows reported."""
    from crm_core.loyalty.pos_import import import_transactions_file

    report = _run(
        import_transactions_file(
            settings, file, dry_run=dry_run, errors_path=errors_path, encoding=encoding, progress=not no_progress
        )
    )
    click.echo(report.summary())
    if report.fatal:
        raise SystemExit(2)


@import_.command("requests")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as", "username", required=True, help="the user the requests are created as (scope applies)")
@click.pass_obj
def import_requests(settings: Settings, file: Path, username: str) -> None:
    """Import service requests; all rows or none, each bad row reported; known request numbers skipped."""
    from crm_core.service.importer import import_requests_file

    report = _run(import_requests_file(settings, file, username=username))
    click.echo(report.summary())
    if report.errors:
        raise SystemExit(2)


@main.command("export")
@click.argument("entity", type=click.Choice(["members"]))
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--as", "username", required=True, help="export what this user may see (field permissions apply)")
@click.pass_obj
def export(settings: Settings, entity: str, fmt: str, output: Path, username: str) -> None:
    """Export members as USER sees them: hidden fields left out, masked fields masked."""
    from crm_core.importers.export import ExportRefused, export_members

    try:
        count = _run(export_members(settings, output, fmt=fmt, username=username))
    except ExportRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"exported {count} {entity} to {output}")


@main.command("report")
@click.argument("name", type=click.Choice(list(REPORT_NAMES)))
@click.option("--from", "start", help="first local day, YYYY-MM-DD (default: 7 days before --to)")
@click.option("--to", "end", help="first local day NOT included, YYYY-MM-DD (default: tomorrow)")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("--as", "username", required=True, help="report what this user may see (their teams)")
@click.option("--queue", default=None)
@click.option("--shape", type=click.Choice(["weekday", "date"]), default="weekday", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.pass_obj
def report(
    settings: Settings,
    name: str,
    start: str | None,
    end: str | None,
    fmt: str,
    username: str,
    queue: str | None,
    shape: str,
    output: Path | None,
) -> None:
    """Export a report (agent performance, callback SLA, heat map) for local days [--from, --to)."""
    from crm_core.reports.period import InvalidPeriod, parse_period
    from crm_core.reports.run import export_report_file
    from crm_core.security.policy import PermissionDenied
    from crm_core.security.service import AuthenticationFailed

    try:
        period = parse_period(start, end, settings.timezone)
        written = _run(
            export_report_file(
                settings,
                name,
                period,
                "xlsx" if fmt == "xlsx" else "csv",
                username=username,
                output=output,
                queue=queue,
                shape="date" if shape == "date" else "weekday",
            )
        )
    except (InvalidPeriod, PermissionDenied, AuthenticationFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {written}")


@main.command("loyalty-nightly")
@click.option("--at", "at", default=None, help="ISO date-time to run as (default now, UTC)")
@click.pass_obj
def loyalty_nightly(settings: Settings, at: str | None) -> None:
    """Expire due points, review tiers whose hold ended, grant birthday points, reconcile (idempotent;
    exit 1 on a difference)."""
    import datetime as dt

    from crm_core.db import make_engine, make_sessionmaker
    from crm_core.loyalty.jobs import run_nightly

    now = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise click.UsageError("--at needs a UTC offset, e.g. 2027-01-01T00:00+08:00")

    async def run() -> Any:
        engine = make_engine(settings.database_url)
        try:
            return await run_nightly(make_sessionmaker(engine), now)
        finally:
            await engine.dispose()

    result = _run(run())
    click.echo(
        f"expired {result.points_expired} points in {result.lots_expired} lots; "
        f"{result.tier_changes} tier changes; {result.birthday_awards} birthday awards; "
        f"{len(result.differences)} differences"
    )
    for diff in result.differences:
        click.echo(f"  member {diff.member_id} {diff.quantity}: {diff.recorded} recorded, {diff.computed} computed")
    if result.differences:
        sys.exit(1)


@main.command("loyalty-flags")
@click.pass_obj
def loyalty_flags(settings: Settings) -> None:
    """Run the suspicious-activity rules; flagged members' redemptions then need a second person."""
    from crm_core.db import make_engine, make_sessionmaker, transaction, utcnow
    from crm_core.loyalty.fraud import run_rules, thresholds_from

    async def run() -> Any:
        engine = make_engine(settings.database_url)
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                return await run_rules(session, thresholds_from(settings), utcnow())
        finally:
            await engine.dispose()

    result = _run(run())
    click.echo(f"{len(result.flags)} flags on {result.members} members; {result.newly_flagged} newly flagged")
    for flag in result.flags:
        click.echo(f"  member {flag.member_id} {flag.rule}: {flag.evidence}")


@main.command("demo-data")
@click.option("--members", "count", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=20261124, show_default=True)
@click.option("--no-progress", is_flag=True, default=False)
@click.pass_obj
def demo_data(settings: Settings, count: int, seed: int, no_progress: bool) -> None:
    """Realistic, deterministic Chinese demo members (same seed, same members)."""
    from crm_core.demo import generate_demo_members

    made = _run(generate_demo_members(settings, count, seed=seed, progress=not no_progress))
    click.echo(f"demo data: {made} members")


if __name__ == "__main__":  # pragma: no cover
    main()
