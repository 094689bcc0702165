"""How `sgma prepare` scales with scene area: MPix/s and peak RSS at 1x and 4x area.

Writes two synthetic scenes (``sgma sample``, side S and 2S), prepares each in its own
subprocess and reports wall time, reference-grid megapixels per second and the child's
peak resident memory (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` elsewhere).
Alignment is windowed, so peak RSS should stay nearly flat while the area quadruples.

Run: ``python benchmarks/prepare_scaling.py [--size 2048] [--tile 512] [--stride 512]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from sgma_cli.engine.prepare import PrepareOptions, prepare
src, out, tile, stride = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def peak_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

base = peak_mib()
t0 = time.perf_counter()
options = PrepareOptions(src=Path(src), out=Path(out), tile=tile, stride=stride, split="1,0,0")
report = prepare(options)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "tiles": report.tiles_written, "tile_mpix": report.megapixels,
                  "peak_mib": peak_mib(), "import_peak_mib": base}))
"""


def main() -> None:
    """Parse options, build both scenes, measure, print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size",
        type=int,
        default=2048,
        help="side of the 1x scene in RGB pixels (4x: twice the side)",
    )
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep scenes and outputs here (default: a temp dir)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sgma_cli.data.synthetic import write_scene

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        rows = []
        for factor, side in (("1x", args.size), ("4x", 2 * args.size)):
            scene = work / f"scene_{side}"
            t0 = time.perf_counter()
            write_scene(scene, size=side, seed=0, vectors=False)
            gen = time.perf_counter() - t0
            out = work / f"data_{side}"
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(scene),
                    str(out),
                    str(args.tile),
                    str(args.stride),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                sys.exit(f"prepare failed on {scene}:\n{proc.stderr}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            mpix = side * side / 1e6
            rows.append((factor, side, mpix, gen, result))
    print(
        f"sgma prepare scaling (tile {args.tile}, stride {args.stride}; rgb 0.5 m + dsm 1 m + "
        f"sar EPSG:3857 -> rgb grid)"
    )
    print(
        f"{'area':>4} {'side px':>8} {'MPix':>7} {'tiles':>6} {'prepare s':>10} {'MPix/s':>7} "
        f"{'peak RSS MiB':>13} "
        f"{'(after import)':>15}"
    )
    for factor, side, mpix, _gen, r in rows:
        print(
            f"{factor:>4} {side:>8} {mpix:>7.1f} {r['tiles']:>6} {r['seconds']:>10.1f} "
            f"{mpix / r['seconds']:>7.2f} "
            f"{r['peak_mib']:>13.0f} {r['import_peak_mib']:>15.0f}"
        )
    ratio = rows[1][4]["peak_mib"] / rows[0][4]["peak_mib"]
    print(f"peak RSS 4x / 1x = {ratio:.2f} (flat = 1.00; area ratio 4.00)")


if __name__ == "__main__":
    main()
