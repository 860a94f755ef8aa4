"""Dashboard latency: p50 / p95 per endpoint, over HTTP against `monosemantic view` run as its own
process (one request at a time, as a researcher typing; the client's time included).

Without --run it first builds a run on the shipped built-in model (8 layers, d_model 192, 768 MLP
neurons, 64 positions, 586 tokens) in a temporary directory: a 16,384-latent TopK SAE on layer 4's
neurons, trained for a few steps and analysed on a few thousand tokens (latency depends on the
shapes, not on how well the SAE learned). The target: text -> features for a 64-token input in well
under a second on 2 cores.

    python benchmarks/dashboard_latency.py                       # builds the run (a few minutes)
    python benchmarks/dashboard_latency.py --run runs/demo
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from monosemantic.cli.main import main as cli

TEXTS = [
    "12 + 7 = 19",
    "three times four equals twelve",
    "1/3 + 1/6 = 1/2",
    "sqrt(81) = 9",
    "7 × 8 = 56",
    "dos más dos son cuatro",
    "3.14 ≈ π",
    "le double de 21 est 42",
]


def build_run(root: Path, d_sae: int) -> Path:
    """A run on the built-in model: the SAE trained briefly, evaluated, analysed."""
    run = root / "run"
    steps = [
        [
            "train",
            "--model",
            "builtin",
            "--hookpoint",
            "layers.4.mlp.neurons",
            "--d-sae",
            str(d_sae),
            "--k",
            "32",
            "--tokens",
            "16k",
            "--batch-size",
            "1024",
            "--chunk-tokens",
            "16k",
            "--out",
            str(run),
        ],
        ["eval", str(run), "--tokens", "4000"],
        ["analyze", str(run), "--tokens", "8000", "--shard-latents", str(d_sae)],
    ]
    for argv in steps:
        print("monosemantic", " ".join(argv), flush=True)
        assert cli(["-q", "--threads", "2", *argv]) == 0
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the CLI turned on INFO logging
    return run


@contextlib.contextmanager
def server(run: Path, threads: int):
    proc = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", "--threads", str(threads), "view", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = next(line.split()[-4] for line in proc.stdout if "http://" in line)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cases(http: httpx.Client) -> dict:
    """endpoint -> a function of the request number that makes one request."""
    hits = [s["index"] for s in http.get("/api/features", params={"order": "density", "limit": 50}).json()]
    doc = http.get(f"/api/feature/{hits[0]}").json()["top_examples"][0]["doc"]
    line = "12 + 7 = 19, 3 × 4 = 12, 81 ÷ 9 = 9, 2 + 2 = 4, 5 − 3 = 2, 10 − 1 = 9, 6 × 6 = 36"
    return {  # 63 characters + BOS: 64 tokens, the built-in model's whole context
        "POST /api/text (64 tokens)": lambda n: http.post("/api/text", json={"text": line[n % 8 : n % 8 + 63], "k": 5}),
        "POST /api/text (typing)": lambda n: http.post("/api/text", json={"text": TEXTS[n % len(TEXTS)], "k": 5}),
        "GET /feature/{i} (page)": lambda n: http.get(f"/feature/{hits[n % len(hits)]}"),
        "GET /api/feature/{i}": lambda n: http.get(f"/api/feature/{hits[n % len(hits)]}"),
        "POST /api/feature/{i}/activations": lambda n: http.post(
            f"/api/feature/{hits[n % len(hits)]}/activations", json={"text": TEXTS[n % len(TEXTS)]}
        ),
        "GET /api/search": lambda n: http.get("/api/search", params={"q": ["=", "plus", "7", "#12"][n % 4]}),
        "GET /document/{doc}?feature": lambda n: http.get(f"/document/{doc}", params={"feature": hits[0]}),
        "POST /api/playground (16 tokens)": lambda n: http.post(
            "/api/playground",
            json={
                "prompt": "3 + 4 = ",
                "new_tokens": 16,
                "interventions": [{"feature": hits[n % len(hits)], "kind": "steer", "value": 8.0}],
            },
        ),
        "GET /run": lambda n: http.get("/run"),
    }


def measure(fn, n: int) -> list[float]:
    fn(0)  # warm-up
    times = []
    for i in range(n):
        start = time.perf_counter()
        r = fn(i)
        times.append(time.perf_counter() - start)
        assert r.status_code == 200, r.text[:300]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="analysed run directory (default: build one, see above)")
    parser.add_argument(
        "--build-dir",
        default=None,
        help="build the run here and keep it (default: a temporary directory); reused if it holds one already",
    )
    parser.add_argument("--d-sae", type=int, default=16384, help="latents of the SAE built without --run")
    parser.add_argument("--requests", type=int, default=60, help="requests per endpoint")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(args.build_dir or tmp)
        if args.run:
            run = Path(args.run)
        else:
            run = build / "run" if (build / "run" / "features").is_dir() else build_run(build, args.d_sae)
        with server(run, args.threads) as url, httpx.Client(base_url=url, timeout=120) as http:
            info = http.get("/api/run").json()
            print(
                f"dashboard latency: {run} (d_sae={info['sae']['d_sae']}, {info['sae']['hookpoint']}), server "
                f"with {args.threads} threads, {args.requests} sequential requests per endpoint"
            )
            print(f"| {'endpoint':<36} | {'p50 ms':>7} | {'p95 ms':>7} |")
            print(f"|{'-' * 38}|{'-' * 9}|{'-' * 9}|")
            for name, fn in cases(http).items():
                times = sorted(measure(fn, args.requests))
                p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[-1]
                print(f"| {name:<36} | {1000 * p50:>7.1f} | {1000 * p95:>7.1f} |", flush=True)


if __name__ == "__main__":
    main()
