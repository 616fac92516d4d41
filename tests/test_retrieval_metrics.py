"""Retrieval metrics against hand-computed rankings (pure torch, fast)."""

import math

import pytest
import torch

from momu.retrieval.metrics import (
    Ranks,
    batch_bounds,
    chance_direction_metrics,
    chance_rank_metrics,
    direction_metrics,
    flatten_metrics,
    inbatch_accuracy,
    inbatch_accuracy_scores,
    pool_metrics,
    rank_metrics,
    rank_true,
    sentence_level_scores,
    sentences_with_fallback,
    split_sentences,
)


def reversed_scores(n: int) -> torch.Tensor:
    """S[i, j] = (j - i) mod n: the true pair scores 0, the lowest of its row and of its column, no ties."""
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    return ((j - i) % n).float()


def test_perfect_ordering():
    scores = torch.eye(5) + 0.01 * torch.arange(25.0).reshape(5, 5) / 25
    m = direction_metrics(scores, batch_size=2, recall_k=20, ks=(1, 5))
    for direction in ("g2t", "t2g"):
        assert m[direction]["acc_2"] == 1.0
        assert m[direction]["mrr"] == 1.0
        assert m[direction]["recall_1"] == 1.0 and m[direction]["recall_20"] == 1.0
        assert m[direction]["mean_rank"] == 1.0 and m[direction]["median_rank"] == 1.0


def test_reversed_ordering():
    n = 6
    m = direction_metrics(reversed_scores(n), batch_size=n, recall_k=2, ks=(1, 5))
    for direction in ("g2t", "t2g"):
        assert m[direction]["acc_6"] == 0.0
        assert m[direction]["mrr"] == pytest.approx(1 / n)
        assert m[direction]["recall_1"] == 0.0 and m[direction]["recall_5"] == 0.0 and m[direction]["recall_2"] == 0.0
        assert m[direction]["mean_rank"] == n and m[direction]["median_rank"] == n


def test_hand_computed_ranks_and_directions():
    # Rows are graphs, columns texts. Ranks by hand:
    # g2t: row 0 -> true 0.9 is 1st; row 1 -> 0.2 below 0.8 and 0.3: 3rd; row 2 -> 0.6 below 0.7: 2nd.
    # t2g: col 0 -> 0.9 is 1st; col 1 -> 0.2 below 0.5: 2nd; col 2 -> 0.6 above 0.4 and 0.3: 1st.
    scores = torch.tensor([[0.9, 0.5, 0.4],
                           [0.8, 0.2, 0.3],
                           [0.7, 0.1, 0.6]])
    g2t = rank_true(scores).ranks().tolist()
    t2g = rank_true(scores.t()).ranks().tolist()
    assert g2t == [1, 3, 2]
    assert t2g == [1, 2, 1]
    m = rank_metrics(rank_true(scores), ks=(1, 2))
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m["recall_1"] == pytest.approx(1 / 3) and m["recall_2"] == pytest.approx(2 / 3)
    assert m["mean_rank"] == 2.0 and m["median_rank"] == 2.0


def test_ties_under_each_policy():
    # Query 0: true 0.5 ties with one other 0.5 and is beaten by nothing -> greater 0, equal 1.
    # Query 1: true 0.2 is beaten by 0.9, ties with two others -> greater 1, equal 2.
    scores = torch.tensor([[0.5, 0.5, 0.1, 0.0],
                           [0.9, 0.2, 0.2, 0.2]])
    ranks = rank_true(scores)
    assert ranks.greater.tolist() == [0, 1] and ranks.equal.tolist() == [1, 2] and ranks.tied_queries == 2
    assert ranks.ranks("pessimistic").tolist() == [2, 4]
    assert ranks.ranks("optimistic").tolist() == [1, 2]
    assert ranks.ranks("expected").tolist() == [1.5, 3.0]
    assert ranks.hit_rate(1, "pessimistic").tolist() == [0, 0]
    assert ranks.hit_rate(1, "optimistic").tolist() == [1, 0]
    # Under random tie-breaking query 0 is 1st half the time; query 1 is uniform on ranks 2..4.
    assert ranks.hit_rate(1, "expected").tolist() == [0.5, 0.0]
    assert ranks.hit_rate(3, "expected").tolist() == pytest.approx([1.0, 2 / 3])
    assert ranks.reciprocal_ranks("expected").tolist() == pytest.approx([(1 + 1 / 2) / 2, (1 / 2 + 1 / 3 + 1 / 4) / 3])
    m = rank_metrics(ranks, ks=(1,), ties="pessimistic")
    assert m["median_rank"] == 3.0 and m["tied_queries"] == 2  # median of [2, 4]


def test_even_and_odd_median():
    ranks = Ranks(torch.tensor([0, 3, 9, 1]), torch.zeros(4, dtype=torch.long), 10)
    assert rank_metrics(ranks)["median_rank"] == 3.0  # ranks 1, 4, 10, 2 -> (2 + 4) / 2
    ranks = Ranks(torch.tensor([0, 3, 9]), torch.zeros(3, dtype=torch.long), 10)
    assert rank_metrics(ranks)["median_rank"] == 4.0


def test_inbatch_short_final_batch():
    assert batch_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    # Batch [0, 2): graph 0 prefers text 1 (miss), graph 1 prefers text 1 (hit).
    # Batch [2, 4): reversed within the block (both miss); the whole-set winner for row 2 is column 0.
    # Batch [4, 5): one pair alone is always a hit, however bad its score against the whole set.
    scores = torch.tensor([[0.1, 0.5, 0.0, 0.0, 0.9],
                           [0.0, 0.6, 0.0, 0.0, 0.9],
                           [0.9, 0.0, 0.1, 0.5, 0.9],
                           [0.0, 0.0, 0.5, 0.1, 0.9],
                           [0.9, 0.9, 0.9, 0.9, -1.0]])
    acc = inbatch_accuracy_scores(scores, batch_size=2)
    assert acc["acc_g2t"] == pytest.approx(2 / 5)  # rows 1 and 4
    # t2g: column 0 -> graphs 0,1 score 0.1, 0.0: hit; column 1 -> 0.5 vs 0.6: hit; columns 2, 3 miss; 4 hit.
    assert acc["acc_t2g"] == pytest.approx(3 / 5)
    assert acc["chance"] == pytest.approx(3 / 5)
    m = direction_metrics(scores, batch_size=2, recall_k=1)
    assert m["g2t"]["acc_2"] == pytest.approx(2 / 5)
    assert m["g2t"]["recall_1"] == pytest.approx(0.0)  # against the whole set no row has its text first


def test_score_based_accuracy_equals_embedding_based():
    torch.manual_seed(0)
    g = torch.nn.functional.normalize(torch.randn(150, 8), dim=1)
    t = torch.nn.functional.normalize(g + 0.8 * torch.randn(150, 8), dim=1)
    emb = inbatch_accuracy(g, t, batch_size=64)
    scores = inbatch_accuracy_scores(g @ t.t(), batch_size=64)
    assert scores == pytest.approx(emb)
    assert emb["chance"] == pytest.approx(3 / 150)


def test_recall_at_k_larger_than_the_set():
    m = direction_metrics(reversed_scores(4), batch_size=64, recall_k=20)
    assert m["g2t"]["recall_20"] == 1.0 and m["g2t"]["acc_64"] == 0.0


def test_split_sentences_follows_momu():
    text = ("The molecule is a steroid ester. It is short. It is a 3-oxo-Delta(4) steroid and a methyl ester.  "
            "It derives from a hydride of a pregnane")
    assert split_sentences(text) == [
        "The molecule is a steroid ester",
        "It is a 3-oxo-Delta(4) steroid and a methyl ester",
        "It derives from a hydride of a pregnane",
    ]
    assert split_sentences("Too short. Also short.") == []
    sentences, offsets, fallbacks = sentences_with_fallback([text, "Too short."])
    assert offsets == [0, 3, 4] and sentences[3] == "Too short." and fallbacks == 1


def test_sentence_level_scores_average_each_texts_sentences():
    graph = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sentences = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # text 0: rows 0-1, text 1: row 2
    scores = sentence_level_scores(graph, sentences, [0, 2, 3], chunk=1)
    expected = torch.tensor([[(1.0 + 0.6) / 2, 0.0],
                             [(0.0 + 0.8) / 2, 1.0]])
    assert torch.allclose(scores, expected)
    with pytest.raises(ValueError, match="no sentence"):
        sentence_level_scores(graph, sentences, [0, 3, 3])
    with pytest.raises(ValueError, match="offsets"):
        sentence_level_scores(graph, sentences, [0, 2])


def test_pool_metrics_rank_against_the_pool():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pool = torch.tensor([[0.9, 0.1], [0.0, 1.0], [0.95, 0.3], [0.5, 0.5]])
    # text 0's molecule is pool row 0 (0.9): beaten by row 2 (0.95) -> rank 2.
    # text 1's molecule is pool row 1 (1.0): first.
    m = pool_metrics(texts, pool, torch.tensor([0, 1]), ks=(1, 10))
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall_1"] == 0.5 and m["recall_10"] == 1.0 and m["mean_rank"] == 1.5 and m["pool_size"] == 4


def test_chance_metrics():
    m = chance_rank_metrics(3, ks=(1, 5))
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert m["recall_1"] == pytest.approx(1 / 3) and m["recall_5"] == 1.0 and m["mean_rank"] == 2.0
    c = chance_direction_metrics(130, batch_size=64, recall_k=20)
    assert c["g2t"]["acc_64"] == pytest.approx(3 / 130) and c["t2g"]["recall_20"] == pytest.approx(20 / 130)
    # The analytic chance agrees with random embeddings on average.
    torch.manual_seed(1)
    n, trials, mrr = 130, 30, 0.0
    for _ in range(trials):
        g = torch.nn.functional.normalize(torch.randn(n, 16), dim=1)
        t = torch.nn.functional.normalize(torch.randn(n, 16), dim=1)
        mrr += direction_metrics(g @ t.t(), ks=(1,))["g2t"]["mrr"] / trials
    assert mrr == pytest.approx(c["g2t"]["mrr"], rel=0.25)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        rank_true(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match="square"):
        inbatch_accuracy_scores(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ties"):
        rank_metrics(rank_true(torch.eye(2)), ties="random")
    with pytest.raises(ValueError, match="targets"):
        rank_true(torch.eye(2), torch.tensor([0, 2]))


def test_flatten_metrics_names():
    flat = flatten_metrics({"paragraph": {"g2t": {"mrr": 0.5, "recall_1": 0.25}}, "n": 3, "skip": math.nan})
    assert flat == {"paragraph/g2t/mrr": 0.5, "paragraph/g2t/recall_1": 0.25, "n": 3.0}
