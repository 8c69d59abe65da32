"""The `python -m troupe job ...` command line, mirroring `troupe job` of the Rust CLI.

Runtime errors print one line to stderr and exit 1; `job submit --wait` exits with the job's
outcome (0 SUCCEEDED, the exit code for FAILED or 128+signal, 1 if neither, 130 STOPPED).
"""

import argparse
import json
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence

from .errors import TroupeError
from .job_client import JobSubmissionClient
from .models import JobDetails, JobStatus

EXIT_STOPPED = 130


def _key_value(text: str) -> "tuple[str, str]":
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m troupe", description="Manage jobs on a troupe cluster.")
    parser.add_argument(
        "--address",
        help="the head, host:port (default: $TROUPE_ADDRESS, then the cluster `troupe up` started)",
    )
    commands = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    job = commands.add_parser("job", help="submit and manage jobs")
    job.add_argument("--address", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = job.add_subparsers(dest="action", required=True, metavar="ACTION")

    submit = actions.add_parser("submit", help="submit a job: job submit [options] -- CMD...")
    submit.add_argument("--working-dir", help="a directory uploaded and used as the job's current directory")
    submit.add_argument(
        "--env",
        action="append",
        type=_key_value,
        default=[],
        metavar="K=V",
        help="an environment variable (repeatable)",
    )
    submit.add_argument("--num-cpus", type=float, help="CPUs reserved for the entrypoint")
    submit.add_argument("--num-gpus", type=float, help="GPUs reserved for the entrypoint")
    submit.add_argument(
        "--submission-id", help="the job's id (submitting it again with the same spec runs nothing new)"
    )
    submit.add_argument(
        "--metadata",
        action="append",
        type=_key_value,
        default=[],
        metavar="K=V",
        help="a metadata entry (repeatable)",
    )
    submit.add_argument("--wait", action="store_true", help="follow the logs and exit with the job's outcome")
    submit.add_argument("command", nargs=argparse.REMAINDER, help="the command (one argument: a shell line)")

    actions.add_parser("status", help="show a job's status").add_argument("id")
    logs = actions.add_parser("logs", help="print a job's log")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    stop = actions.add_parser("stop", help="stop a job")
    stop.add_argument("id")
    stop.add_argument("--grace-s", type=float, help="seconds between SIGTERM and SIGKILL (default 5)")
    list_parser = actions.add_parser("list", help="list jobs")
    list_parser.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    actions.add_parser("delete", help="delete a finished job").add_argument("id")
    return parser


def _entrypoint(command: List[str]) -> str:
    """One argument is a shell line as is; several are quoted and joined."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise TroupeError("no command: give it after --, e.g. job submit -- python train.py")
    return command[0] if len(command) == 1 else shlex.join(command)


def outcome_exit_code(info: JobDetails) -> int:
    """The process exit code that stands for how the job ended."""
    if info.status == JobStatus.SUCCEEDED:
        return 0
    if info.status == JobStatus.STOPPED:
        return EXIT_STOPPED
    if info.signal:
        return 128 + info.signal
    if info.exit_code is not None and 0 < info.exit_code < 256:
        return info.exit_code
    return 1


def _follow(client: JobSubmissionClient, job_id: str) -> None:
    for text in client.tail_job_logs(job_id):
        sys.stdout.write(text)
        sys.stdout.flush()


def _submit(client: JobSubmissionClient, args: argparse.Namespace) -> int:
    job_id = client.submit_job(
        _entrypoint(args.command),
        working_dir=args.working_dir,
        env_vars=dict(args.env),
        entrypoint_num_cpus=args.num_cpus,
        entrypoint_num_gpus=args.num_gpus,
        submission_id=args.submission_id,
        metadata=dict(args.metadata),
    )
    if not args.wait:
        print(job_id)
        return 0
    print(f"submitted job {job_id}", file=sys.stderr, flush=True)
    try:
        _follow(client, job_id)
        info = client.wait_for_job(job_id, timeout=60.0)
    except KeyboardInterrupt:
        print(
            f"\njob {job_id} keeps running; stop it with: python -m troupe job stop {job_id}", file=sys.stderr
        )
        return EXIT_STOPPED
    if info.status != JobStatus.SUCCEEDED:
        print(f"job {job_id} {info.status}: {info.message}", file=sys.stderr)
    return outcome_exit_code(info)


def _format_time(ms: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _show_status(info: JobDetails) -> None:
    fields: Dict[str, object] = {
        "submission_id": info.submission_id,
        "status": info.status,
        "message": info.message or "-",
        "entrypoint": info.entrypoint,
        "exit_code": "-" if info.exit_code is None else info.exit_code,
        "signal": info.signal or "-",
        "node": info.node_id or "-",
        "pid": info.pid or "-",
        "submitted": _format_time(info.submit_time_ms),
        "started": _format_time(info.start_time_ms),
        "ended": _format_time(info.end_time_ms),
    }
    for key, value in fields.items():
        print(f"{key + ':':<15}{value}")


def job_to_json(info: JobDetails) -> dict:
    """One job for `job list --json` (the fields of `troupe job list --json`)."""
    return {
        "submission_id": info.submission_id,
        "status": info.status.value,
        "entrypoint": info.entrypoint,
        "metadata": dict(info.metadata),
        "exit_code": info.exit_code,
        "signal": info.signal or 0,
        "message": info.message,
        "node_id": info.node_id or "",
        "submit_time_ms": info.submit_time_ms or 0,
        "start_time_ms": info.start_time_ms or 0,
        "end_time_ms": info.end_time_ms or 0,
        "log_bytes": info.log_bytes,
    }


def format_table(jobs: Sequence[JobDetails]) -> str:
    """The `job list` table: one row per job, oldest first."""
    rows = [("ID", "STATUS", "EXIT", "SUBMITTED", "ENTRYPOINT")]
    for info in sorted(jobs, key=lambda j: (j.submit_time_ms or 0, j.submission_id)):
        entry = info.entrypoint if len(info.entrypoint) <= 60 else info.entrypoint[:57] + "..."
        exit_code = "-" if info.exit_code is None else str(info.exit_code)
        rows.append(
            (info.submission_id, info.status.value, exit_code, _format_time(info.submit_time_ms), entry)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )


def _run(args: argparse.Namespace) -> int:
    with JobSubmissionClient(address=args.address) as client:
        if args.action == "submit":
            return _submit(client, args)
        if args.action == "status":
            _show_status(client.get_job_info(args.id))
        elif args.action == "logs":
            if args.follow:
                _follow(client, args.id)
            else:
                sys.stdout.write(client.get_job_logs(args.id))
        elif args.action == "stop":
            stopped = client.stop_job(args.id, grace_s=args.grace_s)
            print(f"stopping job {args.id}" if stopped else f"job {args.id} had already finished")
        elif args.action == "list":
            jobs = client.list_jobs()
            if args.json:
                print(json.dumps([job_to_json(info) for info in jobs], indent=2))
            else:
                print(format_table(jobs))
        elif args.action == "delete":
            if not client.delete_job(args.id):
                raise TroupeError(f"no such job: {args.id}")
            print(f"deleted job {args.id}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    if command:
        if args.action != "submit":
            _parser().error("only `job submit` takes a command after --")
        args.command = list(args.command) + command
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        return _run(args)
    except TroupeError as error:
        print(f"troupe: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_STOPPED
