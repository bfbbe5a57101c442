#!/usr/bin/env python3
"""What `send` itself costs on the network path: a send to a local OpenAI-compatible
endpoint against the same send to the built-in echo provider, on the same store.

The endpoint is tests/fakeserver.py on 127.0.0.1, answering at once, so whatever a
network send costs beyond an echo send is sessctl's own: importing the HTTP stack,
building the client, the request and reply handling. Each round runs the four variants
(echo and local, --no-stream and --stream) once, as subprocesses (as a script runs
sessctl), in a rotating order so a busy moment of the shared machine hits them alike;
figures are medians over the rounds, and the ratios come from this one run.

With --llm PATH (the `llm` executable of simonw/llm, installed in a venv of its own;
never a dependency of this project), `llm prompt` to the same endpoint joins the
rounds (streaming and not), with its own user dir in a temp directory.

With --breakdown, one extra pass times the phases of each send in-process (see
bench/phases.py) and lists the modules only the network path imports.

Run from the repository root:
  .venv/bin/python bench/bench_send_network.py
  .venv/bin/python bench/bench_send_network.py --rounds 31 --llm /tmp/llmvenv/bin/llm --breakdown
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402

SESSCTL = [sys.executable, "-c", "from sessctl.cli import main; main()"]
MESSAGE = "hello there"


def _setup(home: Path, base_url: str) -> dict[str, str]:
    cfg = home / "config" / "sessctl"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text(
        'default_provider = "local"\n'
        f'[providers.local]\nkind = "openai"\nbase_url = "{base_url}"\n'
        'api_key_env = "BENCH_KEY"\nmodel = "bench-model"\n'
        '[providers.offline]\nkind = "echo"\n'
    )
    llm_dir = home / "llm"
    llm_dir.mkdir()
    (llm_dir / "extra-openai-models.yaml").write_text(
        f'- model_id: bench-local\n  model_name: bench-model\n  api_base: "{base_url}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSCTL_", "LLM_"))}
    # Installed packages run from bytecode; with PYTHONDONTWRITEBYTECODE set (some CI and
    # sandbox shells set it) an editable checkout would recompile every module of sessctl
    # on every run, ~40 ms that no installed copy pays. The warm-up runs write the .pyc.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # the fast path is for direct connections; see bench/README.md
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               BENCH_KEY="sk-bench-0123456789abcdef", NO_COLOR="1", LLM_USER_PATH=str(llm_dir))
    # The store, the key file and both sessions exist before timing: first-use costs
    # (key creation, migrations) are not what this measures.
    for sid, provider in (("e", "offline"), ("l", "local")):
        subprocess.run([*SESSCTL, "-q", "create", sid, "--provider", provider], env=env, check=True,
                       capture_output=True)
        subprocess.run([*SESSCTL, "-q", "send", "-s", sid, "warm up"], env=env, check=True, capture_output=True)
    return env


def _variants(llm: str | None) -> dict[str, list[str]]:
    v = {
        "echo": [*SESSCTL, "-q", "send", "-s", "e", "--no-stream", MESSAGE],
        "local": [*SESSCTL, "-q", "send", "-s", "l", "--no-stream", MESSAGE],
        "echo --stream": [*SESSCTL, "-q", "send", "-s", "e", "--stream", MESSAGE],
        "local --stream": [*SESSCTL, "-q", "send", "-s", "l", "--stream", MESSAGE],
    }
    if llm:
        v["llm --no-stream"] = [llm, "prompt", "-m", "bench-local", "--no-stream", MESSAGE]
        v["llm"] = [llm, "prompt", "-m", "bench-local", MESSAGE]
    return v


def _time(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[-6:])} failed ({done.returncode}): {done.stderr.strip()}")
    if not done.stdout.strip().endswith(MESSAGE):
        raise SystemExit(f"unexpected reply from {cmd[-6:]}: {done.stdout!r}")
    return wall


def _breakdown(env: dict[str, str]) -> None:
    """Phases in-process (bench/phases.py), and the modules only the network path loads."""
    phases = [sys.executable, str(ROOT / "bench" / "phases.py")]
    print("\n## Phases, in-process (ms; one run each, medians of 5)\n")
    runs: dict[str, dict[str, list[float]]] = {"echo": defaultdict(list), "local": defaultdict(list)}
    for _ in range(5):
        for name, sid in (("echo", "e"), ("local", "l")):
            out = subprocess.run([*phases, "-q", "send", "-s", sid, "--no-stream", MESSAGE],
                                 env={**env, "BENCH_SPAWNED": repr(time.time())},
                                 capture_output=True, text=True, check=True).stderr
            for line in out.splitlines():
                if line.startswith("phase\t"):
                    _, label, ms = line.split("\t")
                    runs[name][label].append(float(ms))
    labels = list(dict.fromkeys([*runs["local"], *runs["echo"]]))
    print("| phase | echo | local | local − echo |")
    print("|---|---:|---:|---:|")
    for label in labels:
        e = statistics.median(runs["echo"].get(label) or [0.0])
        n = statistics.median(runs["local"].get(label) or [0.0])
        print(f"| {label} | {e:.1f} | {n:.1f} | {n - e:+.1f} |")

    print("\n## Modules only the network path imports (-X importtime, self µs, one run)\n")
    loaded: dict[str, dict[str, int]] = {}
    for name, sid in (("echo", "e"), ("local", "l")):
        err = subprocess.run([sys.executable, "-X", "importtime", *SESSCTL[1:], "-q", "send", "-s", sid,
                              "--no-stream", MESSAGE], env=env, capture_output=True, text=True, check=True).stderr
        mods: dict[str, int] = {}
        for line in err.splitlines():
            if line.startswith("import time:") and "|" in line and "self [us]" not in line:
                self_us, _cum, mod = line[len("import time:"):].split("|")
                mods[mod.strip()] = int(self_us)
        loaded[name] = mods
    extra = {m: us for m, us in loaded["local"].items() if m not in loaded["echo"]}
    groups: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for mod, us in extra.items():
        top = mod if mod.startswith("sessctl.") else mod.split(".")[0]
        groups[top] += us
        counts[top] += 1
    print(f"{len(extra)} modules, {sum(extra.values()) / 1000:.1f} ms in all")
    print("| package | modules | ms |")
    print("|---|---:|---:|")
    for top, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {top} | {counts[top]} | {us / 1000:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21, help="interleaved rounds; medians are shown (21)")
    ap.add_argument("--llm", metavar="PATH", help="the llm executable, to compare `llm prompt`")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of each send")
    opts = ap.parse_args()

    with FakeLLMServer() as server, tempfile.TemporaryDirectory(prefix="sessctl-bench-") as tmp:
        env = _setup(Path(tmp), server.openai_base_url)
        variants = _variants(opts.llm)
        if opts.llm:
            _time(variants["llm"], env)  # llm's first run creates its logs database
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(opts.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                times[name].append(_time(variants[name], env))
            server.clear()

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# send: local endpoint vs echo — {opts.rounds} interleaved rounds, "
              f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
              f"load {load:.1f} at the end")
        print("\n| variant | median s | min s | max s |")
        print("|---|---:|---:|---:|")
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(f"| {name} | {med[name]:.3f} | {min(ts):.3f} | {max(ts):.3f} |")
        print()
        for mode, local, echo in (("--no-stream", "local", "echo"), ("--stream", "local --stream", "echo --stream")):
            # Per-round ratios too: a median of ratios is immune to a slow stretch that
            # hit one variant's runs more than the other's.
            per_round = statistics.median(a / b for a, b in zip(times[local], times[echo]))
            print(f"local / echo {mode}: **{med[local] / med[echo]:.2f}×** of medians "
                  f"({per_round:.2f}× median of per-round ratios); target ≤ 1.25×")
        if opts.llm:
            for mode, ours, theirs in (("--no-stream", "local", "llm --no-stream"), ("streaming", "local --stream", "llm")):
                print(f"sessctl send / llm prompt, {mode}: **{med[ours] / med[theirs]:.2f}×** "
                      f"({med[ours]:.3f} s vs {med[theirs]:.3f} s); target ≤ 0.2×")
        if opts.breakdown:
            _breakdown(env)


if __name__ == "__main__":
    main()
