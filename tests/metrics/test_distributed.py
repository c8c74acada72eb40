"""Two-rank gloo run: the meters' states are summed across ranks on compute() (slow: spawns two processes)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from frugalvision.metrics import BinaryIoUMeter, ClassificationMeter, SegmentationMeter, binary_iou, ece, miou, top1


def _data():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(40, 4, generator=g), torch.randint(0, 4, (40,), generator=g)
    seg_t = torch.randint(0, 3, (4, 6, 6), generator=g)
    seg_p = torch.randint(0, 3, (4, 6, 6), generator=g)
    probs, mask = torch.rand(4, 6, 6, generator=g), torch.rand(4, 6, 6, generator=g) < 0.5
    return logits, targets, seg_p, seg_t, probs, mask


def _worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        logits, targets, seg_p, seg_t, probs, mask = _data()
        half = slice(rank * 20, rank * 20 + 20), slice(rank * 2, rank * 2 + 2)
        cls, seg, bev = ClassificationMeter(), SegmentationMeter(3), BinaryIoUMeter(from_logits=False)
        cls.update(logits[half[0]], targets[half[0]])
        seg.update(seg_p[half[1]], seg_t[half[1]])
        bev.update(probs[half[1]], seg_t[half[1]] == 1, valid_mask=mask[half[1]])
        queue.put((rank, cls.compute(), seg.compute(), bev.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_meters_sync_across_two_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_worker, args=(port, queue), nprocs=2, start_method="spawn")
    results = [queue.get(timeout=60) for _ in range(2)]
    logits, targets, seg_p, seg_t, probs, mask = _data()
    for _, cls, seg, bev in results:
        assert cls["top1"] == pytest.approx(top1(logits, targets))
        assert cls["ece"] == pytest.approx(ece(logits, targets), abs=1e-6)
        assert seg == miou(seg_p, seg_t, 3)
        assert bev == pytest.approx(binary_iou(probs, seg_t == 1, valid_mask=mask, from_logits=False))
