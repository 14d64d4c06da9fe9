"""`genq admin add-user NAME --role admin|viewer`: create a dashboard user, or set an existing one's password
and role (which logs it out everywhere). The password is read from standard input (one line; typed without
echo on a terminal), never from the command line."""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from genq.settings import Settings


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="admin dashboard users")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    add = admin_sub.add_parser("add-user", help="create or update a dashboard user (password from stdin)")
    add.add_argument("name", help="user name")
    add.add_argument("--role", choices=("admin", "viewer"), default="viewer",
                     help="admin acts; viewer sees everything and acts on nothing (default)")
    add.set_defaults(func=_add_user)


def _add_user(args: argparse.Namespace) -> int:
    from genq.store.admin_users import AdminUserError, AdminUsers
    from genq.store.db import make_engine, make_session_factory

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    engine = make_engine(Settings.from_env().database_url)
    try:
        created = AdminUsers(make_session_factory(engine)).put(args.name, password, args.role)
    except AdminUserError as e:
        print(f"genq admin add-user: {e.field}: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"{'created' if created else 'updated'} {args.role} {args.name}")
    return 0
