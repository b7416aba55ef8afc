"""The README's picture: frames the main job generated for a test clip, under the ground truth.

    .venv/bin/python scripts/readme_strip.py [--workdir runs/demo] [--out PNG]

Reads the newest evaluation of the demo's store (``<store>/models/ldm/<run>/eval/*/``, the
report `bash scripts/main.sh` ends with): each clip's sample strip there holds evenly spaced
ground-truth frames on top and the generated frames of the same instants below, generated from
the clip's first frame and its music. The first clip's strip is scaled up 2x
(nearest neighbour, so the pixels stay what the model made) into one small PNG (default
docs/images/demo-strip.png, the one the README shows).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def newest_evaluation(store: Path) -> Path:
    """The most recently written evaluation folder of any LDM run in ``store``."""
    reports = sorted(store.glob("models/ldm/*/eval/*/report.md"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise SystemExit(f"no evaluation report under {store}: run `bash scripts/main.sh` first")
    return reports[-1].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/images/demo-strip.png"))
    args = parser.parse_args()
    evaluation = newest_evaluation(args.workdir / "store.zarr")
    samples = sorted((evaluation / "samples").glob("*.png"))
    if not samples:
        raise SystemExit(f"{evaluation} has no sample strips")
    strip = iio.imread(samples[0])
    strip = np.asarray(strip).repeat(2, axis=0).repeat(2, axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, strip, optimize=True)
    print(f"wrote {args.out} ({strip.shape[1]}x{strip.shape[0]}, {args.out.stat().st_size // 1024}"
          f" KB) from {evaluation}")


if __name__ == "__main__":
    main()
