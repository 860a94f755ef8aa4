"""Command line for the dashboard: `monosemantic view RUN_DIR` (wired in by cli/main.py).

monosemantic view runs/demo                   # http://127.0.0.1:8000/
monosemantic --threads 2 view runs/demo --port 8080
monosemantic view builtin --layer 5           # a shipped SAE, analysed on first use (mathlm/pretrained_run.py)
"""

from __future__ import annotations

import argparse
import sys

from monosemantic.config import ConfigError, non_negative_int, parse_int
from monosemantic.mathlm.pretrained import PRETRAINED_DIR
from monosemantic.mathlm.pretrained_run import DEFAULT_LAYER, pretrained_run
from monosemantic.models import BUILTIN


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the interactive dashboard over an analysed run directory: text view, feature pages,
    search, playground, run overview; over a transcoder set, its attribution graphs (graph view, trace,
    interventions). Binds 127.0.0.1 unless told otherwise."""
    from monosemantic.dashboard import allowed_hosts, bind, create_app, is_loopback, serve, url_of

    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} makes the dashboard reachable from other machines; anyone who can "
            "reach it can run the model and read the run's training data. It has no authentication.",
            file=sys.stderr,
        )
    hosts = allowed_hosts(args.host, tuple(args.allow_host))
    run_dir = resolve_run_dir(args)
    from monosemantic.dashboard.graph_app import create_graph_app, is_transcoder_set

    if is_transcoder_set(run_dir):  # the graph view of its attribution graphs (dashboard/graph_app.py)
        print(f"loading {run_dir} (transcoders, model) ...", flush=True)
        app = create_graph_app(run_dir, hosts=hosts, device=args.device)
    else:
        print(f"loading {run_dir} (feature store, model, SAE) ...", flush=True)
        app = create_app(run_dir, hosts=hosts, device=args.device)
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise ConfigError(str(e)) from e
    print(f"dashboard of {run_dir}: {url_of(sock)}  (Ctrl-C to stop)", flush=True)
    serve(app, sock)
    return 0


def resolve_run_dir(args: argparse.Namespace) -> str:
    """RUN_DIR as given, or for 'builtin' the cached run directory of a shipped SAE (made on first use)."""
    if args.run_dir != BUILTIN:
        for flag, value in (("--layer", args.layer), ("--saes", args.saes)):
            if value is not None:
                raise ConfigError(
                    f"{flag} picks a pretrained SAE; it goes with RUN_DIR 'builtin', not {args.run_dir!r}"
                )
        return args.run_dir
    layer = DEFAULT_LAYER if args.layer is None else args.layer
    return str(
        pretrained_run(layer, directory=args.saes or PRETRAINED_DIR, device=args.device, progress=not args.quiet)
    )


def port(text: str) -> int:
    value = parse_int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (0: any free port), got {text!r}")
    return value


def add_view_command(sub, command) -> None:
    """Register `view` on the subparsers `sub`; `command(sub, name, func)` makes a parser."""
    p = command(sub, "view", cmd_view)
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="analysed run directory (after `monosemantic analyze`), a transcoder set (its graph view), or "
        "'builtin': a pretrained SAE of the "
        "built-in model, analysed on first use into ~/.cache/monosemantic/builtin (or $MONOSEMANTIC_CACHE/builtin)",
    )
    p.add_argument(
        "--layer",
        type=non_negative_int,
        default=None,
        metavar="INT",
        help=f"with 'builtin': the layer whose residual-stream SAE to open (default: {DEFAULT_LAYER}, the demo's)",
    )
    p.add_argument(
        "--saes",
        default=None,
        metavar="DIR",
        help="with 'builtin': a set made by `monosemantic mathlm train-saes --export DIR` (default: the shipped one)",
    )
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
