r"""Distributed DiWA sweep in the official three stages: shared init, sharded fine-tuning runs, averaging.

Usage (one process per GPU in stage 2; stage 3 is the ordinary experiment with ``--resume``)::

    python -m frugalvision.methods.diwa.sweep --stage init  --preset paper --out runs --data-root /data/domainbed
    python -m frugalvision.methods.diwa.sweep --stage train --preset paper --out runs --data-root /data/domainbed \\
        --shard $RANK --num-shards $WORLD
    frugal run diwa --preset paper --out runs --data-root /data/domainbed --resume
"""

from __future__ import annotations

import argparse

from frugalvision.methods.diwa.experiment import PRESETS, prepare_init, train_shard


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("init", "train"), required=True)
    parser.add_argument("--preset", choices=tuple(PRESETS), default="standard")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--resnet-weights", default=None)
    parser.add_argument("--accelerator", default=None, help="override fabric.accelerator (cpu, cuda, auto)")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--num-shards", type=int, default=1)
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]()
    config.out, config.progress = args.out, False
    if args.data_root is not None:
        config.data_root = args.data_root
    if args.resnet_weights is not None:
        config.resnet_weights = args.resnet_weights
    if args.accelerator is not None:
        config.fabric.accelerator = args.accelerator
    if args.stage == "init":
        print(f"wrote {prepare_init(config)}")
    else:
        done = train_shard(config, args.shard, args.num_shards)
        print(f"shard {args.shard}/{args.num_shards}: {len(done)} runs complete: {', '.join(done)}")


if __name__ == "__main__":
    main()
