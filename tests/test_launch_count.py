"""benchmarks/launch_count.py: its counter, and the op and host-sync counts of the accelerator
paths (``foreach=True`` on the CPU): flat in the number of tensors for LAMB, LARS and
Adafactor, no host read per tensor, Adafactor at most torch's ``foreach=True`` count."""

from __future__ import annotations

import pytest
import torch

from helpers import benchmark


@pytest.fixture(scope="module")
def lc():
    return benchmark("launch_count")


def test_the_counter_counts_kernels_and_device_reads_only(lc):
    x, step = torch.randn(10), torch.tensor(3.0)
    with lc.LaunchCounter([step]) as c:
        y = x.view(2, 5)  # a view: no kernel
        torch._foreach_mul_([x, y], 2.0)  # one multi-tensor op
        x.add_(1).norm().item()  # two ops, one read of a device value
        step += 1  # host-resident: neither
        float(step)
        x[:3].tolist()  # a read
        x.sum().cpu()  # an op and a read
    assert c.ops == {"_foreach_mul_": 1, "add_": 1, "linalg_vector_norm": 1, "sum": 1}
    assert c.syncs == 3


@pytest.mark.parametrize("name", ["lamb", "lars", "adafactor"])
def test_ops_per_step_do_not_grow_with_the_tensors(lc, name):
    build = lc.ROWS[name]["optimist"]
    few, many = lc.count(build, 10), lc.count(build, 200)
    assert few.total == many.total, (few.ops, many.ops)
    assert few.syncs == many.syncs == 0
    per_tensor = lc.count(lc.ROWS[name]["per tensor"], 10)
    assert per_tensor.syncs >= 10  # what the batched path removes: a host read per tensor


def test_adafactor_launches_no_more_than_torch_foreach(lc):
    for n in (10, 100):
        mine = lc.count(lc.ROWS["adafactor"]["optimist"], n)
        theirs = lc.count(lc.ROWS["adafactor"]["torch foreach"], n)
        assert mine.total <= theirs.total and mine.syncs < theirs.syncs


def test_prodigy_reads_the_host_once_per_step(lc):
    few, many = (lc.count(lc.ROWS["prodigy"]["optimist"], n) for n in (10, 100))
    assert few.syncs == many.syncs == 1
    # left per tensor: one dot and one sum (prodigyopt's sums, bit for bit)
    assert many.total - few.total <= 2 * 90


def test_prodigy_on_accelerators_launches_the_same_ops_for_any_number_of_tensors(lc, monkeypatch):
    from optimist.optim import prodigy

    monkeypatch.setattr(prodigy, "_flat_sums", lambda params, ss: True)  # as off the CPU
    few, many = (lc.count(lc.ROWS["prodigy"]["optimist"], n) for n in (10, 100))
    assert few.total == many.total and few.syncs == many.syncs == 1


def test_main_prints_the_table(lc, capsys):
    assert lc.main(["--optimizers", "lars,adafactor", "--tensors", "4"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| optimizer | who | ops@4 | syncs@4")
    assert [line.split(" | ")[1] for line in lines[1:]] == [
        "optimist", "per tensor", "optimist", "per tensor", "torch foreach",
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        lc.main(["--optimizers", "nope"])
