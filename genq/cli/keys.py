"""`genq keys create|list|revoke`: the API keys (genq/store/api_keys.py), on the configured database.

`create` prints the new key's value once, as the last line of its standard output (scripts read it with
`tail -n1`); only its SHA-256 is stored, so a lost value cannot be shown again: revoke it and make another.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from genq.settings import Settings


def register(sub: Any) -> None:
    """Add the `keys` command to the `genq` parser's subcommands."""
    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key; its value is printed once, as the last line")
    create.add_argument("name", help="a name for the key (letters, digits, '.', '_', '-')")
    create.add_argument("--max-concurrent", type=int, help="unfinished jobs at once (default: unlimited)")
    create.add_argument("--tokens-per-day", type=int,
                        help="prompt + completion tokens per UTC day (default: unlimited)")
    create.set_defaults(func=_create)
    keys_sub.add_parser("list", help="every key: name, quotas, created, revoked").set_defaults(func=_list)
    revoke = keys_sub.add_parser("revoke", help="refuse the key from now on, in every API process")
    revoke.add_argument("name")
    revoke.set_defaults(func=_revoke)


def _store() -> Any:
    from genq.store.api_keys import ApiKeyStore
    from genq.store.db import make_engine, make_session_factory

    return ApiKeyStore(make_session_factory(make_engine(Settings.from_env().database_url)))


def _create(args: argparse.Namespace) -> int:
    from genq.store.api_keys import KeyNameTaken

    try:
        info, value = _store().create(args.name, args.max_concurrent, args.tokens_per_day)
    except (KeyNameTaken, ValueError) as e:
        print(f"genq keys create: {e}", file=sys.stderr)
        return 1
    print(f"created API key {info.name!r} (id {info.id}); max_concurrent={_limit(info.max_concurrent)} "
          f"tokens_per_day={_limit(info.tokens_per_day)}")
    print("its value is shown only now; send it as `Authorization: Bearer <key>`:")
    print(value, flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = _store().all()
    print(f"{'name':<24} {'max_concurrent':>14} {'tokens_per_day':>14}  {'created':<25} revoked")
    for k in rows:
        print(f"{k.name:<24} {_limit(k.max_concurrent):>14} {_limit(k.tokens_per_day):>14}  "
              f"{k.created_at.isoformat(timespec='seconds'):<25} "
              f"{k.revoked_at.isoformat(timespec='seconds') if k.revoked_at else '-'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if not _store().revoke(args.name):
        print(f"genq keys revoke: no live key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked API key {args.name!r}")
    return 0


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
