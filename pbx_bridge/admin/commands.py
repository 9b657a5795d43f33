"""`pbx-bridge user add`: create a user from the command line, such as the first admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import Company, Role, User
from pbx_bridge.admin.auth import hash_password
from pbx_bridge.admin.users import MIN_PASSWORD_LENGTH
from pbx_bridge.config import Config
from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import schema_problem

EXIT_FAILED = 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    user = commands.add_parser("user", help="dashboard and API users")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser(
        "add",
        help="create a user; the password is asked for, or read from standard input when it is not a terminal",
    )
    add.add_argument("login", help="login name, e.g. an e-mail address")
    add.add_argument("--role", choices=[role.value for role in Role], default=Role.ADMIN.value, help="default: admin")
    add.add_argument("--company", metavar="NAME", help="company of a viewer (required for viewers)")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--language", choices=["ru", "en"], default="ru", help="dashboard language (default: ru)")


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise ValueError("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def _add_user(config: Config, args: argparse.Namespace, password: str) -> int:
    database = Database(config.database.url)
    try:
        problem = await schema_problem(database.url, database.display_url)
        if problem is not None:
            print(f"pbx-bridge: {problem}", file=sys.stderr)
            return EXIT_FAILED
        async with database.transaction() as session:
            company_id = None
            if args.role == Role.VIEWER.value:
                company = (await session.scalars(select(Company).where(Company.name == args.company))).first()
                if company is None:
                    print(f"pbx-bridge: company {args.company!r} not found; create it first with `pbx-bridge load`", file=sys.stderr)
                    return EXIT_FAILED
                company_id = company.id
            user = User(
                login=args.login,
                name=args.name,
                password_hash=hash_password(password),
                role=args.role,
                company_id=company_id,
                language=args.language,
            )
            session.add(user)
            await session.flush()
            user_id = user.id
    except IntegrityError:
        print(f"pbx-bridge: a user with login {args.login!r} already exists", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await database.close()
    print(f"user {args.login} created with id {user_id} and role {args.role}")
    return 0


def user_command(args: argparse.Namespace, config: Config) -> int:
    if args.role == Role.VIEWER.value and not args.company:
        print("pbx-bridge: a viewer needs --company NAME", file=sys.stderr)
        return 2
    if args.role == Role.ADMIN.value and args.company:
        print("pbx-bridge: admins see every company; drop --company", file=sys.stderr)
        return 2
    try:
        password = _read_password()
    except ValueError as error:
        print(f"pbx-bridge: {error}", file=sys.stderr)
        return EXIT_FAILED
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"pbx-bridge: the password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return EXIT_FAILED
    return asyncio.run(_add_user(config, args, password))
