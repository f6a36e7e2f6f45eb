"""Command line: ``python -m aioli_repro <command> ...``, one subcommand per stage.

    prepare   tokenise groups into the token store (``groups`` lists them, ``tokenizer`` retrains the BPE)
    train     one run
    method    one method end to end on a setting (its extra runs, then its final run)
    run-all   every notebook of a profile, in order (what ``run_all.sh`` runs after setting up the venv)
    bench     speed: matmul peak, throughput and MFU per preset, Aioli's overhead, DoGE's gradients, the allocator
    cache     what a profile's notebooks cost from scratch; the cached runs none of them uses (``--prune``);
              ``--compress`` converts legacy .json run cache entries to .json.gz

The ``train`` options are generated from the config dataclasses, so ``--help`` shows each field's docstring and can
never drift from what the code reads.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
from typing import Any, get_type_hints

from .bench import aioli_overhead, allocator_speed, doge_gradients, in_run_throughput, run_benchmark
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .corpus import open_source
from .errors import ConfigError
from .executors import Runner
from .pipeline import add_arguments as add_run_all_arguments
from .pipeline import notebooks, run_all
from .run_cache import compress_cache, result_cache_dir
from .token_store import TokenStore
from .tokenizer import EMBEDDED_TOKENIZER, load_tokenizer, train_tokenizer
from .train import train
from .usage import cache_report


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right under a dataclass field), read from the source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(getattr(nxt, "value", None), ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_list(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            return tuple(kind(x) for x in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
    return parse


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_options(parser: argparse.ArgumentParser, cls, prefix: str, skip=()) -> None:
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{prefix} options ({cls.__name__})")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = {int: int, float: float, str: str, bool: _parse_bool}.get(hint)
        if kind is None:  # tuple[str, ...]
            kind = _parse_list(str)
        shown = ",".join(default) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{prefix}.{f.name}", type=kind, default=None,
                           metavar=f.name.upper(), help=f"{docs.get(f.name, '')} (default: {shown})")


def build_config(args: argparse.Namespace) -> RunConfig:
    values: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "train": {}}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            values[section][name] = value
    try:
        method_config = json.loads(args.method_config) if args.method_config else {}
    except ValueError as e:
        raise ConfigError(f"--method-config must be a JSON object, e.g. '{{\"eta\": 0.2}}'; {e}") from None
    if not isinstance(method_config, dict):
        raise ConfigError(f"--method-config must be a JSON object, e.g. '{{\"eta\": 0.2}}'; got {args.method_config}")
    if args.proportions is not None:
        method_config["proportions"] = list(args.proportions)
    cfg = RunConfig(data=DataConfig(**values["data"]), model=ModelConfig(**values["model"]),
                    train=TrainConfig(**values["train"]), method=args.method, method_config=method_config,
                    name=args.name or "")
    cfg.validate()
    return cfg


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aioli_repro", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("prepare", help="tokenise groups into the token store (done automatically on first use)")
    pr.add_argument("--groups", type=_parse_list(str), default=None, help="default: all groups")
    pr.add_argument("--corpus", default="embedded")
    pr.add_argument("--tokenizer", default="embedded")

    g = sub.add_parser("groups", help="list the data groups of the embedded corpus (or --corpus)")
    g.add_argument("--corpus", default="embedded")

    tk = sub.add_parser("tokenizer", help="retrain the embedded byte-level BPE on the corpus' train splits")
    tk.add_argument("--vocab-size", type=int, default=4096)
    tk.add_argument("--corpus", default="embedded")
    tk.add_argument("--out", default=None, help="output folder (default: data/tokenizer)")

    p = sub.add_parser("train", help="train one run (reuses a finished run, resumes an interrupted one)",
                       description="Train one run. Example: python -m aioli_repro train --groups code,books "
                                   "--proportions 0.5,0.5 --steps 300")
    p.add_argument("--method", default="static",
                   help="mixing method; `static` with --proportions, or any registered policy")
    p.add_argument("--proportions", type=_parse_list(float), default=None, metavar="P1,P2,...",
                   help="fixed mixture for the static method, one number per group (normalised; default uniform)")
    p.add_argument("--method-config", default=None, metavar="JSON",
                   help="method hyperparameters as a JSON object, e.g. '{\"eta\": 0.2}'")
    p.add_argument("--name", default=None, help="label for the run directory (not part of the run's identity)")
    p.add_argument("--runs-dir", default=None, help="where run directories live (default: runs/ or $AIOLI_RUNS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_options(p, DataConfig, "data")
    add_dataclass_options(p, ModelConfig, "model")
    add_dataclass_options(p, TrainConfig, "train")

    mt = sub.add_parser("method", help="run a method end to end (its extra runs, then its final run) on a setting",
                        description="Example: python -m aioli_repro method aioli --setting arxiv_stackexchange "
                                    "--profile quick --seed 0")
    mt.add_argument("name", help="stratified, grid, dml, skillit, doremi, doge, aioli, aioli_static, aioli_diagonal, "
                                 "regmix, odm")
    mt.add_argument("--setting", default="arxiv_stackexchange",
                    help="a key of aioli_repro.hparams.SETTINGS, or embedded groups joined with + (latex@102400+pydocs)")
    mt.add_argument("--profile", default="quick", help="smoke, quick, full or paper")
    mt.add_argument("--seed", type=int, default=0)
    mt.add_argument("--jobs", type=int, default=1, help="independent runs executed in parallel")
    mt.add_argument("--runs-dir", default=None)

    ra = sub.add_parser("run-all", help="execute every notebook of a profile in order (run_all.sh's Python side)",
                        description="Regenerate every table and figure of a profile: the numbered notebooks run in "
                                    "order; finished runs come from the run cache. Example: python -m aioli_repro "
                                    "run-all --profile smoke --cached-only")
    add_run_all_arguments(ra)

    b = sub.add_parser("bench", help="measure matmul peak, training throughput and MFU of each preset")
    b.add_argument("--presets", type=_parse_list(str), default=("300k", "1m", "4m", "20m"))
    b.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    b.add_argument("--out", default=None, help="default: results/bench/benchmark_speed.json (or _aioli_overhead)")
    b.add_argument("--overhead", action="store_true",
                   help="instead: wall-time ratio of Aioli to stratified at equal steps (profile full, 3 settings)")
    b.add_argument("--profile", default="full",
                   help="with --overhead: the profile whose recipe is timed; with --in-runs: whose runs are read")
    b.add_argument("--doge", action="store_true",
                   help="instead: seconds per DoGE step for its per-group gradients, per-group passes against one "
                        "full-batch graph (results/bench/benchmark_doge_gradients.json)")
    b.add_argument("--allocator", action="store_true",
                   help="instead: tokens/s of two one-thread 1m runs at once with the system's malloc against "
                        "tcmalloc, alternated 3 times (results/bench/benchmark_allocator.csv)")
    b.add_argument("--in-runs", action="store_true",
                   help="instead: throughput and MFU of the profile's finished real runs, read from the result cache "
                        "(results/bench/in_run_throughput.csv; trains nothing)")

    c = sub.add_parser("cache", help="a profile's from-scratch cost from its run records; list or prune the cached "
                                     "runs no notebook uses",
                       description="Reads results/<profile>/used_runs.json (written by run_all) and prints, per "
                                   "notebook and in all, the runs used and the training seconds they recorded, then "
                                   "the committed cached runs of the profile's recipe that no notebook used.")
    c.add_argument("--profile", default="quick")
    c.add_argument("--jobs", type=int, default=2, help="runs at once on a fresh clone (default 2: the 2-core CPU)")
    c.add_argument("--prune", action="store_true",
                   help="delete the cached runs of this recipe no notebook used (only after a render of every "
                        "notebook of the profile: an entry of a study still in progress looks unused too)")
    c.add_argument("--compress", action="store_true",
                   help="instead: convert every legacy <id>.json entry of the run cache (AIOLI_RESULT_CACHE, default "
                        "results/run_cache) into <id>.json.gz, each checked to read back as the same object before "
                        "its .json is deleted; idempotent")
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "train":
        cfg = build_config(args)
        result = train(cfg, runs_dir=args.runs_dir, progress=not args.quiet)
        summary = {k: result[k] for k in ("name", "method", "groups", "steps", "avg_test_perplexity",
                                          "test_perplexity", "wall_time_s", "train_tokens_per_s")}
        print(json.dumps(summary, indent=1))
        return 0
    if args.command == "method":
        # Lazy: methods brings scipy (the mixing-law fits), which no other command's process needs; a `train` process
        # then holds only the training code, and the peak RSS its result records is the run's own.
        from .methods import run_method

        outcome = run_method(args.name, args.setting, args.profile, args.seed,
                             Runner(args.jobs, args.runs_dir, progress=True))
        print(json.dumps(outcome.summary(), indent=1, default=str)[:4000])
        return 0
    if args.command == "groups":
        src = open_source(args.corpus)
        for name, meta in src.manifest["groups"].items():
            print(f"{name:12s} analogue of {meta.get('slimpajama_analogue', '?'):14s} "
                  f"{meta.get('documents', 0):6d} docs {meta.get('raw_bytes', 0) / 1e6:6.1f} MB  "
                  f"{meta.get('description', '')}")
        return 0
    if args.command == "prepare":
        src = open_source(args.corpus, groups=args.groups)
        groups = args.groups or src.groups
        if hasattr(src, "check_groups"):
            src.check_groups(groups)
        counts = TokenStore(src, load_tokenizer(args.tokenizer)).prepare(groups)
        print(json.dumps(counts, indent=1))
        return 0
    if args.command == "tokenizer":
        src = open_source(args.corpus)
        texts = [t for g in src.groups for t in src.documents(g, "train")]
        out = args.out or EMBEDDED_TOKENIZER
        train_tokenizer(texts, vocab_size=args.vocab_size, out_dir=out)
        print(f"saved a {args.vocab_size}-token byte-level BPE to {out}")
        return 0
    if args.command == "bench":
        if args.doge:
            doge_gradients(**({"out": args.out} if args.out else {}))
        elif args.allocator:
            allocator_speed(**({"out": args.out} if args.out else {}))
        elif args.in_runs:
            in_run_throughput(args.profile, **({"out": args.out} if args.out else {}))
        elif args.overhead:
            aioli_overhead(args.profile, **({"out": args.out} if args.out else {}))
        else:
            run_benchmark(presets=args.presets, steps=args.steps, **({"out": args.out} if args.out else {}))
        return 0
    if args.command == "run-all":
        return run_all(args)
    if args.command == "cache" and args.compress:
        if args.prune:
            raise ValueError("--compress and --prune are separate steps: run one, then the other")
        root = result_cache_dir()
        if root is None:
            raise ValueError("the result cache is off (AIOLI_RESULT_CACHE=off): nothing to compress")
        s = compress_cache(root)
        mib = 1 << 20
        print(f"{root}: {s['converted']} .json entries compressed to .json.gz, {s['twins_removed']} .json removed "
              f"beside an identical .json.gz; {s['entries']} entries")
        print(f"before: {s['files_before']} files, {s['bytes_before'] / mib:.2f} MiB; after: {s['files_after']} "
              f"files, {s['bytes_after'] / mib:.2f} MiB")
        for name in s["conflicts"]:
            print(f"warning: {name} was kept: its .json.gz twin holds another entry (resolve by hand)")
        for name in s["unreadable"]:
            print(f"warning: {name} was kept: it does not decode")
        return 1 if s["conflicts"] or s["unreadable"] else 0
    if args.command == "cache":
        cache_report(args.profile, [p.name for p in notebooks()], jobs=args.jobs, prune=args.prune)
        return 0
    raise AssertionError(args.command)
