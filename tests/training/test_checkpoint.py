"""save / load_model: round trips, bit-identical resumption, and refusing bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import optimist
from optimist.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten
from optimist.training.callbacks import ModelCheckpoint


def make_model():
    return optimist.Sequential(
        [
            Dense(16, activation="relu", input_shape=(4,)),
            BatchNormalization(),
            Dropout(0.2),
            Dense(3, activation="softmax"),
        ]
    )


def test_round_trip_sequential(blobs, tmp_path):
    x, labels = blobs
    model = make_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy", "top_k_accuracy"])
    model.fit(x, labels, epochs=2, verbose=0)
    path = tmp_path / "model.pt"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # atomic: no temp file left
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "optimist.checkpoint" and raw["epoch"] == 2
    assert json.loads(raw["config"])["layers"][0]["class_name"] == "Dense"

    loaded = optimist.load_model(path)
    assert isinstance(loaded, optimist.Sequential)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    assert loaded.epoch == 2
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.evaluate(x, labels, verbose=0) == model.evaluate(x, labels, verbose=0)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.loss.name == "sparse_categorical_crossentropy"
    assert [m.name for m in loaded.compiled_metrics] == ["accuracy", "top_k_accuracy"]
    for a, b in zip(
        model.optimizer.state_dict()["state"].values(),
        loaded.optimizer.state_dict()["state"].values(),
        strict=True,
    ):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
    assert loaded.summary(print_fn=None) == model.summary(print_fn=None)


def test_round_trip_uncompiled_and_lazy(tmp_path):
    model = optimist.Sequential([Conv2D(2, 3, padding="same"), Flatten(), Dense(2)])
    model(torch.zeros(1, 5, 5, 1))  # built lazily
    model.save(tmp_path / "m.pt")
    loaded = optimist.load_model(tmp_path / "m.pt")
    assert not loaded.compiled and loaded.input_shape == (None, 5, 5, 1)
    x = torch.randn(3, 5, 5, 1)
    torch.testing.assert_close(loaded(x), model(x))


def test_round_trip_wrapped_module(blobs, tmp_path):
    x, labels = blobs

    def net():
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    model = optimist.Model(net())
    model.compile(
        torch.optim.Adam(model.parameters(), lr=0.01),
        optimist.training.losses.SparseCategoricalCrossentropy(from_logits=True),
        ["accuracy"],
    )
    model.fit(x, labels, epochs=1, verbose=0)
    model.save(tmp_path / "net.pt")
    with pytest.raises(ValueError, match=r"pass the module to load into"):
        optimist.load_model(tmp_path / "net.pt")
    loaded = optimist.load_model(tmp_path / "net.pt", module=net())
    assert isinstance(loaded.optimizer, torch.optim.Adam)
    assert loaded.optimizer.param_groups[0]["lr"] == 0.01
    assert loaded.loss.from_logits
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _fit_run(x, labels, *, epochs, initial_epoch=0, model=None, callbacks=()):
    if model is None:
        torch.manual_seed(42)
        model = make_model()
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(
        x,
        labels,
        batch_size=16,
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_split=0.2,
        verbose=0,
        callbacks=list(callbacks),
    )
    return model


def test_resume_is_bit_identical(blobs, tmp_path):
    x, labels = blobs
    straight = _fit_run(x, labels, epochs=4)

    first_half = _fit_run(x, labels, epochs=2)
    first_half.save(tmp_path / "half.pt")
    torch.manual_seed(999)  # whatever happens in between is undone by load_model
    torch.rand(10)
    resumed = optimist.load_model(tmp_path / "half.pt")
    _fit_run(x, labels, epochs=4, initial_epoch=resumed.epoch, model=resumed)

    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert straight.history.history["loss"][2:] == resumed.history.history["loss"]


def test_resume_from_model_checkpoint_is_bit_identical(blobs, tmp_path):
    x, labels = blobs
    straight = _fit_run(x, labels, epochs=3, callbacks=[ModelCheckpoint(tmp_path / "e{epoch}.pt")])
    resumed = optimist.load_model(tmp_path / "e1.pt")
    assert resumed.epoch == 1
    _fit_run(x, labels, epochs=3, initial_epoch=1, model=resumed)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_custom_activation_needs_custom_objects(tmp_path):
    def cube(t):
        return t**3

    model = optimist.Sequential([Dense(2, activation=cube, input_shape=(2,))])
    model.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="Unknown activation 'cube'.*custom_objects"):
        optimist.load_model(tmp_path / "c.pt")
    loaded = optimist.load_model(tmp_path / "c.pt", custom_objects={"cube": cube})
    x = torch.randn(4, 2)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "kind,match",
    [
        ("random", "not a readable checkpoint"),
        ("truncated", "not a readable checkpoint"),
        ("json", "not a readable checkpoint"),
        ("empty", "is empty"),
        ("tensor", "not an optimist checkpoint: it contains a torch.Tensor"),
        ("state_dict", "bare state_dict"),
        ("future", "newer than this optimist reads"),
    ],
)
def test_bad_files_raise_value_error_naming_the_path(tmp_path, kind, match):
    path = tmp_path / f"{kind}.pt"
    model = optimist.Sequential([Dense(2, input_shape=(3,))])
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        model.save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "json":
        path.write_text(json.dumps({"format": "optimist.checkpoint", "epoch": 1}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "future":
        model.save(path)
        raw = torch.load(path, weights_only=True)
        raw["version"] = 99
        torch.save(raw, path)
    with pytest.raises(ValueError, match=match) as info:
        optimist.load_model(path)
    assert str(path) in str(info.value)


def test_load_weights_accepts_bare_state_dict_and_checks_shapes(tmp_path):
    model = optimist.Sequential([Dense(2, input_shape=(3,))])
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    other = optimist.Sequential([Dense(2, input_shape=(3,))])
    other.load_weights(tmp_path / "sd.pt")
    assert torch.equal(other[0].kernel, model[0].kernel)
    wrong = optimist.Sequential([Dense(2, input_shape=(4,))])
    with pytest.raises(ValueError, match=r"do not fit this model: shape mismatch"):
        wrong.load_weights(tmp_path / "sd.pt")
    with pytest.raises(FileNotFoundError):
        optimist.load_model(tmp_path / "missing.pt")


class _RunsCode:
    """Pickles to a call of ``os.system``: what a malicious checkpoint holds."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this-must-not-run",))


class _Foreign:
    pass


@pytest.mark.parametrize(
    "payload,named",
    [(_RunsCode(), "posix.system"), (_Foreign(), "test_checkpoint._Foreign")],
)
def test_malicious_pickle_is_refused_for_safety(tmp_path, payload, named):
    # torch 2.13 words the refusal "Trying to load unsupported GLOBAL posix.system whose module
    # posix is blocked" or "Unsupported global: GLOBAL ... was not an allowed global": both must
    # read as a refusal, never as a corrupt file.
    path = tmp_path / "evil.pt"
    torch.save({"format": "optimist.checkpoint", "version": 1, "x": payload}, path)
    model = optimist.Sequential([Dense(2, input_shape=(3,))])
    for load in (optimist.load_model, model.load_weights):
        with pytest.raises(ValueError, match="refused for safety") as info:
            load(path)
        text = str(info.value)
        assert str(path) in text and named in text and "weights_only=False" in text
        assert "corrupt" not in text


def test_an_optimizer_saved_under_its_old_module_path_is_rebuilt():
    # LAMB and LARS moved out of optimist.optim.trust_ratio; a file saved before names the
    # old path, and the class is found by its public name in optimist.optim
    from optimist.optim import LAMB, LARS
    from optimist.training.checkpoint import rebuild_optimizer

    params = [torch.nn.Parameter(torch.zeros(3, 2))]
    for cls in (LAMB, LARS):
        config = {"class": f"optimist.optim.trust_ratio.{cls.__name__}", "defaults": {"lr": 0.5}}
        opt = rebuild_optimizer(config, params)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.5
    # outside the optimizer packages, or a name that is no class there: nothing is imported
    assert rebuild_optimizer({"class": "os.path.join"}, params) is None
    assert rebuild_optimizer({"class": "optimist.optim.gone.optimizer"}, params) is None
    assert rebuild_optimizer({"class": "optimist.optim.gone.NoSuchOptimizer"}, params) is None
