"""Benchmark: 224-px tiles at 0.5 µm/px from a generated 20,000 x 20,000 SVS, tiles per second.

Run by hand (not a test):

    .venv/bin/python benchmarks/bench_slide_tiling.py [--slide PATH] [--size 20000] [--workers 2]

The slide is written once (``data_prep.slide_writer`` with a :class:`MosaicSource` of the real
``skimage.data.immunohistochemistry()`` stain image, JPEG tiles, 0.5 µm/px) unless ``--slide``
names an existing one. Timed: reading every planned tissue tile (OpenSlide ``read_region`` with
alpha flattened onto white) with a thread pool; planning (thumbnail, Otsu mask) is timed apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None, help="existing slide (else one is generated)")
    parser.add_argument("--size", type=int, default=20_000, help="side of the generated slide in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-tiles", type=int, default=0, help="read at most this many tiles (0 = all)")
    args = parser.parse_args()

    from skimage.data import immunohistochemistry

    from data_prep.slide_writer import MosaicSource, write_pyramidal_svs_from_source
    from data_prep.slides import iter_tiles, open_slide, plan_tiles, saturation_of, tissue_mask

    with tempfile.TemporaryDirectory() as tmp:
        path = args.slide
        if path is None:
            path = Path(tmp) / "bench.svs"
            t0 = time.perf_counter()
            write_pyramidal_svs_from_source(
                path, MosaicSource(immunohistochemistry(), args.size, args.size), mpp=0.5
            )
            print(
                f"wrote {args.size}x{args.size} slide ({path.stat().st_size / 1e6:.0f} MB) "
                f"in {time.perf_counter() - t0:.1f} s"
            )
        with open_slide(path) as reader:
            t0 = time.perf_counter()
            thumb = reader.thumbnail()
            mask = tissue_mask(thumb)
            plan = plan_tiles(reader.info, mask, saturation_of(thumb), tile_px=224, target_mpp=0.5)
            t_plan = time.perf_counter() - t0
            if args.max_tiles:
                plan = plan[: args.max_tiles]
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for _ in iter_tiles(reader, plan, workers=args.workers))
            t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    print(f"planning (thumbnail + Otsu mask + plan): {t_plan:.2f} s; tissue tiles: {len(plan)}")
    print(
        f"read {n} tiles of 224 px at 0.5 um/px with {args.workers} worker(s): {n / t_read:.0f} tiles/s "
        f"wall ({t_read:.1f} s); CPU {c_read:.1f} s = {n / max(c_read, 1e-9):.0f} tiles per CPU-second; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
