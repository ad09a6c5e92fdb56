"""Is the engine's fused path still bit for bit the per-optimizer kernels it replaced (issue 8)?

Runs the classic table's settings (``tests/test_optimizers.py``: the nine optimizers, 30
settings) with ``fused=True`` for 30 steps in float64, float32 and bfloat16, once in this tree
and once in ``--old-tree`` (a checkout of commit 8b65312, the old kernels), each in its own
process with one thread, and compares every parameter and state tensor with ``torch.equal``.
Not a test: the old kernels are not part of this tree, and the first run in the old tree
compiles them (about a minute; give it its own ``TORCH_EXTENSIONS_DIR``)::

    git archive 8b65312 | tar -x -C /tmp/old
    TORCH_EXTENSIONS_DIR=/tmp/ext-old python benchmarks/old_kernels_bitwise.py --old-tree /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
SHAPES = [(64, 80), (300,), (7,), (3, 5, 2)]
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
STEPS = 30


def settings() -> list[tuple[str, dict]]:
    """(class name, constructor settings) of the classic table, JSON-able."""
    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    import test_optimizers

    out = []
    for case, config in test_optimizers.CONFIGS:
        opt = case.ours([torch.zeros(2, requires_grad=True)], **config)
        out.append((type(opt).__name__, config))
    return out


def run(rows: list[tuple[str, dict]], out: str) -> None:
    """Step every row with ``fused=True`` in the optimist found on ``sys.path``; save results."""
    import optimist.optim as oo

    torch.set_num_threads(1)
    results = {}
    for i, (name, config) in enumerate(rows):
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        for label, dtype in DTYPES.items():
            gen = torch.Generator().manual_seed(0)
            params = [
                torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
                for s in SHAPES
            ]
            opt = getattr(oo, name)(params, fused=True, **config)
            for step in range(STEPS):
                gen = torch.Generator().manual_seed(1000 + step)
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
                opt.step()
            tensors = [p.detach().clone() for p in params]
            for p in params:
                state = opt.state[p]
                tensors += [
                    state[k].clone()
                    for k in sorted(state)
                    if isinstance(state[k], torch.Tensor) and k != "step"
                ]
            results[f"{i} {name} {config} {label}"] = tensors
    torch.save(results, out)


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-tree", help="a checkout of commit 8b65312 (the old kernels)")
    ap.add_argument("--worker", nargs=2, metavar=("ROWS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run(json.loads(Path(args.worker[0]).read_text()), args.worker[1])
        return
    if not args.old_tree:
        ap.error("--old-tree is required")
    trees = {"engine": HERE.parents[1], "old": Path(args.old_tree).resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp, "rows.json")
        rows.write_text(json.dumps(settings()))
        saved = {}
        for label, tree in trees.items():
            saved[label] = Path(tmp, f"{label}.pt")
            env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
            if label == "old":  # its own kernel cache: the old build must not replace the new
                env["TORCH_EXTENSIONS_DIR"] = os.environ.get(
                    "OLD_TORCH_EXTENSIONS_DIR", str(Path(tmp, "ext-old"))
                )
            command = [sys.executable, str(HERE), "--worker", str(rows), str(saved[label])]
            subprocess.run(command, env=env, check=True, timeout=1800)
        new, old = (torch.load(saved[k], weights_only=True) for k in ("engine", "old"))
    differ = [key for key in new if not same(new[key], old[key])]
    print(
        f"{len(new)} runs ({len(new) // len(DTYPES)} settings x {', '.join(DTYPES)}), "
        f"{STEPS} steps: {len(new) - len(differ)} bit for bit, {len(differ)} differ"
    )
    for key in differ:
        print("  differs:", key)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
