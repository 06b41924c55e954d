"""Compare two runs of ``python -m benchmarks``: did a change make any ratio worse?

Each run writes ``ratios.json`` into its ``--out`` folder (our time over the peer's, per case).
This script pairs the rows of two such files by (benchmark, case, metric, our method, peer) and
prints, per benchmark, metric and pair of methods, the geometric mean of the ratios before and
after and their quotient (below 1: the change made numpyro_ssm relatively faster), then the
cells that moved most. Ratios, not times, are compared, so the two runs may come from machines
or loads that differ, as long as each ran its peers side by side.

Typical use, for a change between two commits::

    git worktree add /tmp/before <commit>
    (cd /tmp/before && python -m benchmarks --quick --out /tmp/runs/before)
    python -m benchmarks --quick --out /tmp/runs/after
    python benchmarks/compare_runs.py /tmp/runs/before/ratios.json /tmp/runs/after/ratios.json
"""

import argparse
import json
import math
from collections import defaultdict


def _key(row):
    return row["benchmark"], row["case"], row["metric"], row["ours_label"], row["peer_label"]


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def compare(before, after):
    """``(groups, cells)``: per-group geometric means and per-cell ratios of the paired rows."""
    old = {_key(r): r["ratio"] for r in before if r["ratio"] > 0}
    new = {_key(r): r["ratio"] for r in after if r["ratio"] > 0}
    cells = [(k, old[k], new[k]) for k in old if k in new]
    grouped = defaultdict(list)
    for k, b, a in cells:
        grouped[(k[0], k[2], k[3], k[4])].append((b, a))
    groups = [
        (g, len(v), _geomean([b for b, _ in v]), _geomean([a for _, a in v]))
        for g, v in grouped.items()
    ]
    return groups, cells


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="ratios.json of the earlier run")
    parser.add_argument("after", help="ratios.json of the later run")
    parser.add_argument("--top", type=int, default=8, help="how many moved cells to list")
    args = parser.parse_args()
    with open(args.before) as f, open(args.after) as g:
        groups, cells = compare(json.load(f), json.load(g))
    if not cells:
        raise SystemExit("The two files share no (benchmark, case, metric, methods) row.")
    print("| benchmark | metric | ours | peer | cells | before | after | after ÷ before |")
    print("|---|---|---|---|---|---|---|---|")
    for (bench, metric, ours, peer), n, b, a in groups:
        print(f"| {bench} | {metric} | {ours} | {peer} | {n} | {b:.3g} | {a:.3g} | {a / b:.2f} |")
    overall = _geomean([a / b for _, b, a in cells])
    print(f"\n{len(cells)} paired cells; geometric mean of after ÷ before: {overall:.3f}")
    print(f"\nThe {args.top} cells that moved most (after ÷ before):")
    moved = sorted(cells, key=lambda c: abs(math.log(c[2] / c[1])), reverse=True)
    for k, b, a in moved[: args.top]:
        print(f"  {a / b:5.2f}  {' / '.join(k)}: {b:.3g} -> {a:.3g}")


if __name__ == "__main__":
    main()
