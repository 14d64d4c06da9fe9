"""`genq submit`, `genq jobs ...`, `genq batch ...`: the command-line client of a running service.

Configured by `GENQ_URL` (default http://127.0.0.1:8000) and `GENQ_API_KEY`. Output is for people; `--json`
prints the API's objects as JSON instead (a list page, a job, a batch; JSON lines for streamed events and batch
results). An API error prints its status, code, message and field on stderr and exits 1; an unreachable service
exits 3; a job that ended otherwise than `succeeded` (with `--wait` or `--stream`) exits 4.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from genq.cli.progress import ProgressBar
from genq.client import ApiError, ConnectionFailed, GenqClient

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_JOB_NOT_SUCCEEDED = 4
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")


def add_client_commands(sub: Any) -> None:
    """Register the client's commands on the `genq` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of text")

    submit = sub.add_parser("submit", parents=[common], help="submit one job to the service at GENQ_URL")
    submit.add_argument("prompt", help="the prompt (with --chat: the user's message)")
    submit.add_argument("--chat", action="store_true", help="send the prompt as a chat message (chat template)")
    submit.add_argument("--system", help="with --chat: a system message before it")
    submit.add_argument("--model", help="a served model (default: the service's default)")
    submit.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="a generation parameter, V as JSON where it parses (max_new_tokens=64, stop='[\"\\n\"]')")
    submit.add_argument("--metadata", action="append", default=[], metavar="K=V", help="a metadata string")
    submit.add_argument("--priority", type=int, help="0-9, higher first")
    how = submit.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="wait until the job finishes, then print its output")
    how.add_argument("--stream", action="store_true", help="print the text as it is generated")
    submit.set_defaults(func=_command(_submit))

    jobs = sub.add_parser("jobs", help="list, show and cancel jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", parents=[common], help="jobs, newest first")
    listing.add_argument("--status", action="append", choices=JOB_STATUSES, help="only these (repeatable)")
    listing.add_argument("--model")
    listing.add_argument("--limit", type=int, default=20, help="1-100 (default 20)")
    listing.add_argument("--cursor", help="the next_cursor of a previous page")
    listing.set_defaults(func=_command(_jobs_list))
    get = jobs_sub.add_parser("get", parents=[common], help="one job")
    get.add_argument("id")
    get.set_defaults(func=_command(_jobs_get))
    cancel = jobs_sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("id")
    cancel.set_defaults(func=_command(_jobs_cancel))

    batch = sub.add_parser("batch", help="submit a JSONL batch, read its results")
    batch_sub = batch.add_subparsers(dest="batch_command", required=True)
    bsubmit = batch_sub.add_parser("submit", parents=[common], help="submit a JSONL file (- for stdin)")
    bsubmit.add_argument("file")
    bsubmit.add_argument("--metadata", action="append", default=[], metavar="K=V", help="a metadata string")
    bsubmit.add_argument("--wait", action="store_true", help="wait until every job finished (progress on a terminal)")
    bsubmit.set_defaults(func=_command(_batch_submit))
    bget = batch_sub.add_parser("get", parents=[common], help="a batch's status and counts")
    bget.add_argument("id")
    bget.set_defaults(func=_command(_batch_get))
    results = batch_sub.add_parser("results", parents=[common], help="one result per line, in file order")
    results.add_argument("id")
    results.set_defaults(func=_command(_batch_results))


def _command(run: Callable[[GenqClient, argparse.Namespace, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    """`run` with a client from the environment, its errors turned into messages and exit statuses."""
    def command(args: argparse.Namespace) -> int:
        client = GenqClient.from_env()
        try:
            return run(client, args, sys.stdout)
        except ApiError as e:
            print(f"genq: {e}", file=sys.stderr)
            return EXIT_API_ERROR
        except ConnectionFailed as e:
            print(f"genq: cannot reach the service at {client.url} (GENQ_URL): {e}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except UsageError as e:
            print(f"genq: {e}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
    return command


class UsageError(ValueError):
    """A command-line value the client refuses before sending anything."""


def parse_pairs(pairs: list[str], option: str, as_json: bool) -> dict[str, Any]:
    """`k=v` options as a dict; with `as_json`, each value is JSON where it parses, else the string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r}: give KEY=VALUE")
        if as_json:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        else:
            out[key] = value
    return out


def _submit(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    messages = None
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": args.prompt})
    elif args.system:
        raise UsageError("--system needs --chat")
    job = client.submit(None if args.chat else args.prompt, messages=messages, model=args.model,
                        params=parse_pairs(args.param, "--param", as_json=True),
                        metadata=parse_pairs(args.metadata, "--metadata", as_json=False) or None,
                        priority=args.priority, wait=30 if args.wait else None)
    if args.stream:
        return _stream(client, job, args.json, out)
    if args.wait:
        if job["status"] not in ("succeeded", "failed", "canceled", "expired"):
            job = client.wait(job["id"])
        _print_job(job, args.json, out, text_only=True)
        if not args.json:
            _report_unsuccessful(job)
        return _job_exit(job)
    if args.json:
        _dump(job, out)
    else:
        print(f"{job['id']} {job['status']} (model {job['model']})", file=out)
    return 0


def _stream(client: GenqClient, job: dict[str, Any], as_json: bool, out: TextIO) -> int:
    final = job
    for event in client.events(job["id"]):
        if as_json:
            _dump({"id": event.id, "event": event.event, "data": event.data}, out)
        elif event.event == "delta":
            out.write(event.data["text"])
            out.flush()
        elif event.event == "restart":
            out.write("\n")
            print(f"genq: job {job['id']} restarted (attempt {event.data.get('attempt')}): its text starts over",
                  file=sys.stderr)
        if event.event == "done":
            final = event.data
    if not as_json:
        out.write("\n")
        _report_unsuccessful(final)
    return _job_exit(final)


def _jobs_list(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    page = client.list_jobs(args.status, model=args.model, limit=args.limit, cursor=args.cursor)
    if args.json:
        _dump(page, out)
        return 0
    rows = [(j["id"], j["status"], j["model"], j["created_at"], _snippet(j)) for j in page["data"]]
    _table(("ID", "STATUS", "MODEL", "CREATED", "OUTPUT"), rows, out)
    if page.get("has_more"):
        print(f"more: genq jobs list --cursor {page['next_cursor']}", file=out)
    return 0


def _jobs_get(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    _print_job(client.get_job(args.id), args.json, out)
    return 0


def _jobs_cancel(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    job = client.cancel_job(args.id)
    if args.json:
        _dump(job, out)
    elif job["status"] == "canceled":
        print(f"{job['id']} canceled", file=out)
    else:
        print(f"{job['id']} {job['status']}: its worker is stopping it", file=out)
    return 0


def _batch_submit(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as e:
        raise UsageError(f"{args.file}: {e.strerror or e}") from None
    metadata = parse_pairs(args.metadata, "--metadata", as_json=False) or None
    batch = client.submit_batch(data, metadata=metadata)
    if args.wait:
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            batch = client.wait_batch(batch["id"], on_progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
    if args.json:
        _dump(batch, out)
    else:
        print(f"{batch['id']} {batch['status']}: {_counts(batch['counts'])}", file=out)
    return 0


def _batch_get(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    batch = client.get_batch(args.id)
    if args.json:
        _dump(batch, out)
    else:
        print(f"{batch['id']} {batch['status']}: {_counts(batch['counts'])}", file=out)
    return 0


def _batch_results(client: GenqClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = []
    for line in client.batch_results(args.id):
        if args.json:
            _dump(line, out)
        else:
            job = line["job"]
            rows.append((line["custom_id"], job["id"], job["status"], _snippet(job)))
    if not args.json:
        _table(("CUSTOM_ID", "JOB", "STATUS", "OUTPUT"), rows, out)
    return 0


def _print_job(job: dict[str, Any], as_json: bool, out: TextIO, text_only: bool = False) -> None:
    if as_json:
        _dump(job, out)
        return
    output, error = job.get("output"), job.get("error")
    if text_only and job["status"] == "succeeded" and output:
        print(output["text"], file=out)
        return
    print(f"{job['id']} {job['status']} (model {job['model']}, attempts {job['attempts']})", file=out)
    print(f"  created {job['created_at']}, started {job['started_at'] or '-'}, "
          f"completed {job['completed_at'] or '-'}", file=out)
    if job.get("queue_position") is not None:
        wait = job.get("estimated_wait_seconds")
        print(f"  queue position {job['queue_position']}"
              + (f", about {wait:.0f} s to wait" if isinstance(wait, int | float) else ""), file=out)
    if error:
        print(f"  error {error['code']}: {error['message']}", file=out)
    if output:
        usage = output.get("usage") or {}
        print(f"  finish_reason {output['finish_reason']}, tokens {usage.get('prompt_tokens')} prompt + "
              f"{usage.get('completion_tokens')} completion", file=out)
        print(output["text"], file=out)


def _report_unsuccessful(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        detail = f": {error.get('code')}: {error.get('message')}" if error else ""
        print(f"genq: job {job['id']} {job['status']}{detail}", file=sys.stderr)


def _job_exit(job: dict[str, Any]) -> int:
    return 0 if job["status"] == "succeeded" else EXIT_JOB_NOT_SUCCEEDED


def _snippet(job: dict[str, Any], width: int = 48) -> str:
    output, error = job.get("output"), job.get("error")
    text = output["text"] if output else (f"[{error['code']}]" if error else "")
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _counts(counts: dict[str, int]) -> str:
    by_status = sorted((s, n) for s, n in counts.items() if s != "total" and n)
    return f"{counts.get('total', 0)} jobs" + "".join(f", {n} {status}" for status, n in by_status)


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]], out: TextIO) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _dump(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")
    out.flush()
