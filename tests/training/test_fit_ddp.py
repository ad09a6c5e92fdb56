"""``fit(..., strategy="ddp")`` with 2 gloo processes on loopback equals one process."""

from __future__ import annotations

import pytest
import torch

import dist_cases
import optimist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit_ddp")
    return dist_cases.spawn(folder, "fit_rank"), folder


def test_ddp_fit_equals_one_process_and_reduces_metrics(ranks):
    (rank0, rank1), _ = ranks
    history, weights = dist_cases.fit_model(None, [])
    for key, values in history.items():  # loss and accuracy of the whole data, every epoch
        assert rank0["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
        assert rank1["history"][key] == rank0["history"][key]
    for got, want in zip(rank0["weights"], weights, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_only_rank_0_prints_and_writes(ranks):
    _, folder = ranks
    printed = [(folder / f"out{r}.txt").read_text() for r in range(2)]
    first_fit = printed[0].split("Epoch 1/4")[1]  # several fits ran: the first one's lines
    assert first_fit.count("Epoch 4/4") == 1 and "Epoch" not in printed[1]
    assert (folder / "log0.csv").exists() and not (folder / "log1.csv").exists()


def test_a_stop_asked_on_one_rank_stops_every_rank(ranks):
    (rank0, rank1), _ = ranks
    assert len(rank0["stopped"]["loss"]) == len(rank1["stopped"]["loss"]) == 2


def test_bad_strategy_and_missing_process_group_are_clear_errors():
    model = optimist.Sequential([optimist.layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="strategy must be one of"):
        model.fit(x, torch.zeros(4, 2), strategy="fsdp", verbose=0)
    with pytest.raises(ValueError, match="needs an initialised process group"):
        model.fit(x, torch.zeros(4, 2), strategy="ddp", verbose=0)


@pytest.mark.parametrize("source", ["dataset", "loader", "sampler"])
def test_ddp_fit_on_a_dataset_or_dataloader_equals_the_arrays(ranks, source):
    # a Dataset / DataLoader re-batched over a DistributedSampler (or the user's own) feeds
    # every rank exactly the rows the arrays give it: the same run, bit for bit
    (rank0, rank1), _ = ranks
    history, weights = rank0[source]
    assert history == rank0["history"] and rank1[source][0] == history
    for got, want in zip(weights, rank0["weights"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_ddp_fit_shuffles_a_dataset_alike_on_every_rank(ranks):
    (rank0, rank1), _ = ranks
    (h0, w0), (h1, w1) = rank0["shuffled"], rank1["shuffled"]
    assert h0 == h1 and h0["loss"] != rank0["history"]["loss"]  # another order than unshuffled
    for a, b in zip(w0, w1, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_stop_asked_mid_epoch_on_one_rank_stops_every_rank_after_that_batch(ranks):
    (rank0, rank1), _ = ranks
    history, weights = dist_cases.fit_model(None, [dist_cases.StopAtBatch()])
    assert len(history["loss"]) == 1  # one process: 3 batches of the first epoch
    for rank in (rank0, rank1):
        got_history, got = rank["stopped_mid"]
        assert len(got_history["loss"]) == 1
        for a, b in zip(got, weights, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and not the weights of a whole epoch
    _, epoch1 = dist_cases.fit_model(None, [dist_cases.StopOnEpoch0()])
    pairs = zip(rank0["stopped_mid"][1], epoch1, strict=True)
    assert any(not torch.allclose(a, b) for a, b in pairs)
