"""Command line for the dashboard: `monosemantic view RUN_DIR` (wired in by cli/main.py).

monosemantic view runs/demo                   # http://127.0.0.1:8000/
monosemantic --threads 2 view runs/demo --port 8080
"""

from __future__ import annotations

import argparse
import sys

from monosemantic.config import ConfigError, parse_int


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the interactive dashboard over an analysed run directory: text view, feature pages,
    search, playground, run overview. Binds 127.0.0.1 unless told otherwise."""
    from monosemantic.dashboard import allowed_hosts, bind, create_app, is_loopback, serve, url_of

    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} makes the dashboard reachable from other machines; anyone who can "
            "reach it can run the model and read the run's training data. It has no authentication.",
            file=sys.stderr,
        )
    hosts = allowed_hosts(args.host, tuple(args.allow_host))
    print(f"loading {args.run_dir} (feature store, model, SAE) ...", flush=True)
    app = create_app(args.run_dir, hosts=hosts, device=args.device)
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise ConfigError(str(e)) from e
    print(f"dashboard of {args.run_dir}: {url_of(sock)}  (Ctrl-C to stop)", flush=True)
    serve(app, sock)
    return 0


def port(text: str) -> int:
    value = parse_int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (0: any free port), got {text!r}")
    return value


def add_view_command(sub, command) -> None:
    """Register `view` on the subparsers `sub`; `command(sub, name, func)` makes a parser."""
    p = command(sub, "view", cmd_view)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory (after `monosemantic analyze`)")
    p.add_argument("--port", type=port, default=8000, metavar="INT", help="port to listen on (0: any free port)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on; anything but a loopback address exposes the dashboard to the network",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (repeatable; the Host-header allowlist "
        "holds 127.0.0.1, localhost, ::1 and --host)",
    )
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run model and SAE on")
