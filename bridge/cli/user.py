"""``bridge user`` and ``bridge org``: the directory of clinicians, operators and places."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from bridge.cli.common import ConfigOption, cli_settings, err, out

user_app = typer.Typer(help="Clinicians and operators who log in.", no_args_is_help=True)
org_app = typer.Typer(help="Organizations: practices, departments.", no_args_is_help=True)


@contextmanager
def directory_session(config: ConfigOption) -> Iterator[Session]:
    """A migrated database's session in one transaction, with the audit chain's key set."""
    from bridge.store.audit import set_chain_key
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    settings = cli_settings(config)
    set_chain_key(settings.audit_hmac_key.get_secret_value().encode("utf-8") or None)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    try:
        with make_session_factory(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _fail(exc: Exception) -> typer.Exit:
    err.print(str(exc))
    return typer.Exit(2)


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="The login name.")],
    role: Annotated[str, typer.Option(
        help="family_doctor | diagnostics | consultant | operator | admin")],
    name: Annotated[str, typer.Option(help="Display name (shown in the console).")] = "",
    organization: Annotated[str | None, typer.Option(
        help="The organization's identifier (see `bridge org list`).")] = None,
    specialty: Annotated[str | None, typer.Option(help="A consultant's specialty.")] = None,
    identifier: Annotated[str | None, typer.Option(
        help="The practitioner's registry or HR identifier.")] = None,
    oidc_subject: Annotated[str | None, typer.Option(
        help="The identity provider's `sub` for this user (OIDC logins).")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input.")] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user. The password is asked for (or read with --password-stdin), never an
    argument: arguments are visible to every user of the machine."""
    from bridge.errors import BridgeError
    from bridge.services.auth.users import create_user

    password: str | None = None
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\n")
    elif oidc_subject is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with directory_session(config) as session:
            user = create_user(session, username=username, role=role, password=password,
                               display_name=name, organization=organization,
                               specialty=specialty, identifier=identifier,
                               oidc_subject=oidc_subject, actor="cli")
            user_id = user.id
    except BridgeError as exc:
        raise _fail(exc) from None
    out.print(f"user {username} created (Practitioner/{user_id}, {role})")


@user_app.command("list")
def user_list(config: ConfigOption = None) -> None:
    """List users: id, username, role, organization, disabled."""
    from bridge.services.auth.users import list_users

    with directory_session(config) as session:
        for user in list_users(session):
            state = "disabled" if user.disabled else "active"
            typer.echo(f"{user.id}\t{user.username}\t{user.role}\t"
                       f"{user.organization_id or ''}\t{state}")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()],
                 config: ConfigOption = None) -> None:
    """Disable a user: their logins end at once; the audit trail keeps them."""
    from bridge.errors import BridgeError
    from bridge.services.auth.users import set_disabled

    try:
        with directory_session(config) as session:
            set_disabled(session, username, True, actor="cli")
    except BridgeError as exc:
        raise _fail(exc) from None
    out.print(f"user {username} disabled")


@org_app.command("create")
def org_create(
    identifier: Annotated[str, typer.Argument(help="Registry or hospital identifier.")],
    name: Annotated[str, typer.Option(help="The organization's name.")],
    kind: Annotated[str, typer.Option(help="practice | diagnostics | consultants | hospital")],
    config: ConfigOption = None,
) -> None:
    """Add an organization to the directory."""
    from bridge.errors import BridgeError
    from bridge.services.auth.users import create_organization

    try:
        with directory_session(config) as session:
            create_organization(session, identifier=identifier, name=name, kind=kind,
                                actor="cli")
    except BridgeError as exc:
        raise _fail(exc) from None
    out.print(f"organization {identifier} created")


@org_app.command("list")
def org_list(config: ConfigOption = None) -> None:
    """List organizations: id, identifier, kind, name."""
    from sqlalchemy import select

    from bridge.store.people_models import Organization

    with directory_session(config) as session:
        for org in session.execute(select(Organization).order_by(Organization.id)).scalars():
            typer.echo(f"{org.id}\t{org.identifier}\t{org.kind}\t{org.name}")


@user_app.command("sync-registry")
def user_sync_registry(config: ConfigOption = None) -> None:
    """Pull Organizations and Practitioners (with their PractitionerRole) from the registry
    (BRIDGE_FHIR_REGISTRY_URL) into the directory."""
    from bridge.clients.fhir import FhirClient
    from bridge.errors import BridgeError
    from bridge.services.auth.directory_sync import DirectoryRules, pull_directory
    from bridge.store.audit import set_chain_key
    from bridge.store.db import make_engine, make_session_factory
    from bridge.store.migrate import upgrade

    settings = cli_settings(config)
    if not settings.fhir_registry_url:
        err.print("BRIDGE_FHIR_REGISTRY_URL is not set")
        raise typer.Exit(2)
    set_chain_key(settings.audit_hmac_key.get_secret_value().encode("utf-8") or None)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    try:
        with FhirClient(settings.fhir_registry_url,
                        timeout=settings.fhir_timeout_seconds) as client:
            result = pull_directory(client, make_session_factory(engine),
                                    DirectoryRules.load(settings.mappings_dir))
    except BridgeError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
    out.print(f"{result.organizations} organizations, {result.users} users "
              f"({result.disabled} disabled)")
