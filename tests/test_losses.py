import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from momu.losses import info_nce, momu_contrastive_loss, vse_max_violation_loss


def normalised(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def direct_info_nce(g, t, tau):
    """Written out row by row: -log softmax of the positive, both directions, averaged."""
    n = g.shape[0]
    total = 0.0
    for i in range(n):
        row = [float(g[i] @ t[j]) / tau for j in range(n)]
        col = [float(t[i] @ g[j]) / tau for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def test_info_nce_against_direct_computation():
    g, t = normalised(7, 5, 0), normalised(7, 5, 1)
    assert float(info_nce(g, t, 0.1)) == pytest.approx(direct_info_nce(g, t, 0.1), rel=1e-5)
    assert float(info_nce(g, t, 0.5)) == pytest.approx(direct_info_nce(g, t, 0.5), rel=1e-5)


def test_info_nce_perfect_alignment_is_low():
    g = normalised(8, 16, 0)
    assert float(info_nce(g, g, 0.1)) < float(info_nce(g, normalised(8, 16, 3), 0.1))


def test_four_losses_are_averaged():
    g1, g2, t1, t2 = (normalised(6, 8, s) for s in range(4))
    expected = (direct_info_nce(g1, t1, .1) + direct_info_nce(g1, t2, .1) + direct_info_nce(g2, t1, .1)
                + direct_info_nce(g2, t2, .1)) / 4
    assert float(momu_contrastive_loss((g1, g2), (t1, t2), 0.1)) == pytest.approx(expected, rel=1e-5)
    only = float(momu_contrastive_loss((g1, g2), (t1, t2), 0.1, pairs=("g2t1",)))
    assert only == pytest.approx(direct_info_nce(g2, t1, .1), rel=1e-5)
    with pytest.raises(ValueError):
        momu_contrastive_loss((g1, g2), (t1, t2), 0.1, pairs=())


def test_gather_negatives_without_process_group_is_local():
    g, t = normalised(5, 4, 0), normalised(5, 4, 1)
    assert torch.equal(info_nce(g, t, 0.1, gather_negatives=True), info_nce(g, t, 0.1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g_full, t_full = normalised(8, 6, 0), normalised(8, 6, 1)
        rows = slice(rank * 4, rank * 4 + 4)
        g = g_full[rows].clone().requires_grad_(True)
        t = t_full[rows].clone().requires_grad_(True)
        loss = info_nce(g, t, 0.1, gather_negatives=True)
        loss.backward()
        results[rank] = (float(loss), g.grad.clone(), t.grad.clone())
    finally:
        dist.destroy_process_group()


def test_gathered_negatives_across_two_workers_equal_global_batch():
    """Two gloo workers with 4 rows each: the mean of their losses is the 8-row global InfoNCE, and each
    worker's gradient is world_size x the global gradient of its rows (DDP then divides by world size)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    g_full = normalised(8, 6, 0).requires_grad_(True)
    t_full = normalised(8, 6, 1).requires_grad_(True)
    global_loss = info_nce(g_full, t_full, 0.1)
    global_loss.backward()
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(float(global_loss), rel=1e-5)
    for rank in (0, 1):
        rows = slice(rank * 4, rank * 4 + 4)
        torch.testing.assert_close(results[rank][1], 2 * g_full.grad[rows])
        torch.testing.assert_close(results[rank][2], 2 * t_full.grad[rows])
    # Local-only negatives differ from the global objective, so the test above could fail.
    local = (float(info_nce(g_full[:4], t_full[:4], 0.1)) + float(info_nce(g_full[4:], t_full[4:], 0.1))) / 2
    assert local != pytest.approx(float(global_loss), rel=1e-3)


def test_vse_max_violation_by_hand():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    # scores = g @ t.T = [[1, .8], [0, .6]]; positives 1 and .6; margin .5
    # graph->text, hardest wrong text per graph: g0: .5 + .8 - 1 = .3;  g1: .5 + 0 - .6 < 0 -> 0
    # text->graph, hardest wrong graph per text: t0: .5 + 0 - 1 < 0 -> 0;  t1: .5 + .8 - .6 = .7
    assert float(vse_max_violation_loss(g, t, margin=0.5)) == pytest.approx(1.0)
    assert float(vse_max_violation_loss(g, g, margin=0.2)) == 0.0
