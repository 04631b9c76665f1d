"""gf.data: Standardizer (statistics vs NumPy, per feature / per channel / channels-last, fit on
train applied to test, inverse, zero std, state through gf.save), MiniBatches (coverage, shuffling
reproducible from the seed, resume at an epoch or mid-epoch, drop_last, batch sizes, errors),
train_val_split (Keras' last-fraction rule), a training run resumed from a checkpoint
continuing bitwise, and the digits loader (a stratified 70/10/20 split).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradfuse as gf
from gradfuse import data as gfdata
from gradfuse.data import MiniBatches, Standardizer, train_val_split


def rng(seed=0):
    return np.random.default_rng(seed)


def features(n=200, f=6, dtype=np.float64, seed=0):
    r = rng(seed)
    return (r.standard_normal((n, f)) * r.uniform(0.1, 10, f) + r.uniform(-5, 5, f)).astype(dtype)


def images(n=24, c=3, h=5, w=7, dtype=np.float32, seed=1):
    r = rng(seed)
    return (
        r.standard_normal((n, c, h, w)) * np.array([1, 5, 20])[:c, None, None]
        + np.array([0.5, -3, 100])[:c, None, None]
    ).astype(dtype)


# ---- Standardizer: statistics --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_feature_statistics_match_numpy(dtype):
    x = features(dtype=dtype)
    s = Standardizer().fit(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s.mean_, x64.mean(axis=0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(s.std_, x64.std(axis=0), rtol=1e-12)  # population std (divide by m)
    assert s.mean_.dtype == s.std_.dtype == np.float64 and s.mean_.shape == (6,)
    out = s.transform(x)
    assert out.dtype == dtype
    # exactly the formula, with the statistics rounded to x's dtype
    expected = (x - s.mean_.astype(dtype)) / s.std_.astype(dtype)
    assert out.tobytes() == expected.tobytes()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.mean(axis=0, dtype=np.float64), 0, atol=tol)
    np.testing.assert_allclose(out.std(axis=0, dtype=np.float64), 1, atol=tol)


@pytest.mark.parametrize(
    "layout, axis, reduce", [("NCHW", 1, (0, 2, 3)), ("NHWC", -1, (0, 1, 2)), ("NHWC", 3, (0, 1, 2))]
)
def test_per_channel_statistics_match_numpy(layout, axis, reduce):
    x = images()
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    s = Standardizer(axis=axis).fit(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s.mean_, x64.mean(axis=reduce), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.std_, x64.std(axis=reduce), rtol=1e-12)
    assert s.mean_.shape == (3,)
    out = s.transform(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.mean(axis=reduce, dtype=np.float64), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=reduce, dtype=np.float64), 1, atol=1e-5)


def test_mean_image_and_global_statistics():
    x = images(dtype=np.float64)
    per_pixel = Standardizer("center", axis=(1, 2, 3)).fit(x)  # AlexNet's "mean image"
    np.testing.assert_allclose(per_pixel.mean_, x.mean(axis=0), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(per_pixel.transform(x).mean(axis=0), 0, atol=1e-12)
    both = Standardizer(axis=(2, 1)).fit(x)  # axes in any order: per (channel, row)
    np.testing.assert_allclose(both.mean_, x.mean(axis=(0, 3)), rtol=1e-13, atol=1e-12)
    everything = Standardizer(axis=()).fit(x)
    assert everything.mean_.shape == ()
    np.testing.assert_allclose(everything.mean_, x.mean(), rtol=1e-13)
    np.testing.assert_allclose(everything.std_, x.std(), rtol=1e-12)


def test_modes():
    x = features()
    center, scale, zscore = (Standardizer(m).fit(x) for m in ("center", "scale", "zscore"))
    assert center.transform(x).tobytes() == (x - center.mean_).tobytes()
    assert scale.transform(x).tobytes() == (x / scale.std_).tobytes()  # divide by std, mean kept
    np.testing.assert_allclose(scale.transform(x).std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(scale.transform(x).mean(axis=0), x.mean(axis=0) / x.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(center.transform(x).std(axis=0), x.std(axis=0), rtol=1e-12)
    assert zscore.transform(x).tobytes() == ((x - zscore.mean_) / zscore.std_).tobytes()


def test_fit_on_train_applied_to_test():
    x = features(n=300)
    train, test = x[:200], x[200:] * 2 + 1  # a test set with other statistics
    s = Standardizer().fit(train)
    out = s.transform(test)
    np.testing.assert_allclose(out, (test - train.mean(axis=0)) / train.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(out, (test - s.mean_) / s.std_)
    assert not np.allclose(out.mean(axis=0), 0, atol=0.1)  # the test set's own mean is not used
    before = s.state_dict()
    s.transform(features(n=50, seed=9))  # transforming never refits
    for k, v in s.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("mode", ["zscore", "center", "scale"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inverse_transform_round_trip(mode, dtype):
    x = images(dtype=dtype)
    s = Standardizer(mode, axis=1).fit(x)
    back = s.inverse_transform(s.transform(x))
    assert back.dtype == dtype
    np.testing.assert_allclose(
        back, x, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-10
    )


def test_transform_returns_a_new_array_and_keeps_the_input():
    x = features(dtype=np.float32)
    copy = x.copy()
    s = Standardizer().fit(x)
    for fn in (s.transform, s.inverse_transform):
        out = fn(x)
        assert not np.shares_memory(out, x)
        np.testing.assert_array_equal(x, copy)


def test_dtypes():
    x = features()
    s = Standardizer().fit(x)
    assert s.transform(x.astype(np.float32)).dtype == np.float32
    assert s.transform(x.astype(">f8")).dtype == np.dtype("<f8")  # native order
    assert s.transform(x.astype(np.float16)).dtype == np.float32
    assert s.transform(x.astype(np.int32)).dtype == np.float64
    np.testing.assert_array_equal(s.transform(x.astype(np.int64)), s.transform(x.astype(np.int64).astype(np.float64)))
    u8 = rng().integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)  # raw image bytes
    t = Standardizer(axis=1).fit_transform(u8)
    assert t.dtype == np.float64
    np.testing.assert_allclose(t.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    assert Standardizer().fit_transform([[1, 2], [3, 5]]).dtype == np.float64  # lists work
    with pytest.raises(TypeError, match="dtype complex128"):
        Standardizer().fit(x.astype(complex))
    with pytest.raises(TypeError, match="dtype"):
        s.transform(x.astype(complex))


def test_zero_std_features_are_left_unscaled():
    x = features(n=1000)
    x[:, 2] = 0.1  # constant, not exactly representable: the float64 mean may be off by an ulp
    x[:, 4] = -7.0
    s = Standardizer().fit(x)
    assert s.scale_[2] == s.scale_[4] == 1.0 and s.std_[4] == 0.0
    out = s.transform(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, [2, 4]], 0, atol=1e-15)
    np.testing.assert_allclose(out[:, [0, 1, 3, 5]].std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(out), x, rtol=1e-12, atol=1e-12)
    one = Standardizer().fit(x[:1])  # a single sample: every feature is constant
    assert (one.scale_ == 1).all() and (one.transform(x[:1]) == 0).all()
    assert (Standardizer("scale").fit(x).transform(x)[:, 4] == -7).all()  # scale only: unchanged


def test_statistics_in_pieces_match_one_piece(monkeypatch):
    x = images(n=40, dtype=np.float32)
    whole = Standardizer(axis=1).fit(x)
    monkeypatch.setattr(gfdata, "_STAT_CHUNK", 100)  # 1 sample (105 values) per piece
    pieces = Standardizer(axis=1).fit(x)
    np.testing.assert_allclose(pieces.mean_, whole.mean_, rtol=1e-14)
    np.testing.assert_allclose(pieces.std_, whole.std_, rtol=1e-13)


def test_standardizer_errors():
    x = features()
    with pytest.raises(RuntimeError, match="not fitted yet; call fit"):
        Standardizer().transform(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().inverse_transform(x)
    s = Standardizer().fit(x)
    with pytest.raises(ValueError, match=r"has 5 features along axis 1; the Standardizer was fitted on 6"):
        s.transform(x[:, :5])
    with pytest.raises(ValueError, match="fitted on data with 2 dimension"):
        s.transform(x[:, :, None])
    with pytest.raises(ValueError, match="feature shape"):
        Standardizer(axis=(1, 2)).fit(images()).transform(images(h=4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        Standardizer().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        Standardizer().fit(np.array([[1.0, np.inf], [2.0, 3.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        Standardizer("minmax")
    with pytest.raises(ValueError, match="sample axis"):
        Standardizer(axis=0).fit(x)
    with pytest.raises(ValueError, match="sample axis"):
        Standardizer(axis=-2).fit(x)
    with pytest.raises(ValueError, match="out of range"):
        Standardizer(axis=2).fit(x)
    with pytest.raises(ValueError, match="repeated axis"):
        Standardizer(axis=(1, 1))
    with pytest.raises(ValueError, match="names one axis twice"):
        Standardizer(axis=(1, -1)).fit(x)
    with pytest.raises(TypeError, match="axis must be an int"):
        Standardizer(axis=1.0)
    with pytest.raises(ValueError, match="empty"):
        Standardizer().fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="scalar"):
        Standardizer().fit(np.float64(3))


# ---- Standardizer: state -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, axis", [("zscore", 1), ("center", -1), ("scale", (1, 2, 3)), ("zscore", ())])
def test_state_dict_round_trip_through_a_checkpoint(tmp_path, mode, axis):
    x = images(dtype=np.float32)
    s = Standardizer(mode, axis=axis).fit(x)
    state = s.state_dict()
    assert all(isinstance(v, (str, np.ndarray)) for v in state.values())  # arrays and strings only
    gf.save({"scaler": state}, tmp_path / "s.gfc")
    loaded = Standardizer()  # a fresh, default one
    loaded.load_state_dict(gf.load(tmp_path / "s.gfc")["scaler"])
    assert loaded.mode == mode and loaded.fitted
    test = images(seed=7)
    assert loaded.transform(test).tobytes() == s.transform(test).tobytes()
    assert loaded.inverse_transform(test).tobytes() == s.inverse_transform(test).tobytes()
    state["mean"][...] = 0  # state_dict returns copies
    assert s.transform(test).tobytes() == loaded.transform(test).tobytes()


def test_unfitted_state_dict_round_trip(tmp_path):
    s = Standardizer("center", axis=-1)
    gf.save(s.state_dict(), tmp_path / "s.gfc")
    loaded = Standardizer()
    loaded.load_state_dict(gf.load(tmp_path / "s.gfc"))
    assert loaded.mode == "center" and loaded.axis == (-1,) and not loaded.fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        loaded.transform(features())


def test_load_state_dict_checks_everything_first():
    x = features()
    s = Standardizer().fit(x)
    good = s.state_dict()
    other = Standardizer("center").fit(x * 3)
    before = other.state_dict()
    bad_cases = [
        {**good, "mode": "minmax"},
        {**good, "mean": good["mean"][:3]},
        {**good, "scale": -good["scale"]},
        {**good, "std": good["std"].astype(np.int64)},
        {**good, "axis": np.array([0])},
        {**good, "ndim": np.array(2.5)},
        {k: v for k, v in good.items() if k != "std"},
        {**good, "extra": np.zeros(1)},
    ]
    for bad in bad_cases:
        with pytest.raises((ValueError, TypeError)):
            other.load_state_dict(bad)
        after = other.state_dict()
        assert after.keys() == before.keys()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])
    other.load_state_dict(good)
    assert other.transform(x).tobytes() == s.transform(x).tobytes()


# ---- MiniBatches ----------------------------------------------------------------------------------------------
def dataset(n=103, seed=0):
    x = rng(seed).standard_normal((n, 4, 3)).astype(np.float32)
    x[:, 0, 0] = np.arange(n)  # sample i can be recognised in x
    y = np.arange(n) * 10
    return x, y


def epoch_batches(batches):
    return [(xb.copy(), yb.copy()) for xb, yb in batches]


@pytest.mark.parametrize(
    "n, batch_size, drop_last",
    [
        (103, 32, False),
        (103, 32, True),
        (96, 32, False),
        (96, 32, True),
        (7, 1, False),
        (7, 7, False),
        (7, 100, False),
        (7, 100, True),
        (1, 3, False),
    ],
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_once_per_epoch(n, batch_size, drop_last, shuffle):
    x, y = dataset(n)
    batches = MiniBatches(x, y, batch_size=batch_size, shuffle=shuffle, seed=3, drop_last=drop_last)
    expected_len = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(batches) == expected_len
    for epoch in range(3):
        assert batches.epoch == epoch and batches.batch == 0
        got = epoch_batches(batches)
        assert len(got) == expected_len
        sizes = [len(yb) for _, yb in got]
        assert all(s == batch_size for s in sizes[:-1]) and (not sizes or sizes[-1] <= batch_size)
        seen = np.concatenate([yb for _, yb in got]) // 10 if got else np.array([], int)
        for xb, yb in got:  # x and y stay aligned
            np.testing.assert_array_equal(xb[:, 0, 0] * 10, yb)
            assert xb.shape[1:] == (4, 3)
        if drop_last:
            assert len(seen) == expected_len * batch_size and len(set(seen)) == len(seen)
        else:
            assert sorted(seen) == list(range(n))  # every sample exactly once
        if not shuffle:
            assert list(seen) == list(range(len(seen)))
    assert batches.epoch == 3


def test_views_without_shuffle_copies_with_shuffle():
    x, y = dataset()
    for xb, yb in MiniBatches(x, y, batch_size=10, shuffle=False):
        assert np.shares_memory(xb, x) and np.shares_memory(yb, y)
    for xb, yb in MiniBatches(x, y, batch_size=10, shuffle=True):
        assert not np.shares_memory(xb, x) and not np.shares_memory(yb, y)


def test_shuffle_differs_between_epochs_and_is_reproducible():
    x, y = dataset()
    a = MiniBatches(x, y, batch_size=16, seed=11)
    runs = [[yb.copy() for _, yb in a] for _ in range(4)]
    for i in range(4):
        for j in range(i):
            assert not all(np.array_equal(p, q) for p, q in zip(runs[i], runs[j]))  # reshuffled
    b = MiniBatches(x, y, batch_size=16, seed=11)
    again = [[yb.copy() for _, yb in b] for _ in range(4)]
    for r1, r2 in zip(runs, again):
        assert all(np.array_equal(p, q) for p, q in zip(r1, r2))  # same seed, same batches
    c = MiniBatches(x, y, batch_size=16, seed=12)
    assert not all(np.array_equal(p, q) for p, q in zip(runs[0], [yb for _, yb in c]))
    for epoch in range(4):  # the documented order
        order = np.random.default_rng([11, epoch]).permutation(len(x))
        np.testing.assert_array_equal(np.concatenate(runs[epoch]) // 10, order)
        np.testing.assert_array_equal(a.order(epoch), order)


def test_resume_at_epoch_k_gives_the_same_batches():
    x, y = dataset()
    full = MiniBatches(x, y, batch_size=20, seed=5)
    epochs = [epoch_batches(full) for _ in range(6)]
    resumed = MiniBatches(x, y, batch_size=20, seed=5)
    resumed.set_epoch(4)
    for k in (4, 5):
        got = epoch_batches(resumed)
        assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(got, epochs[k]))
    resumed.set_epoch(1)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(epoch_batches(resumed), epochs[1]))


def test_resume_from_a_state_dict_mid_epoch(tmp_path):
    x, y = dataset()
    full = MiniBatches(x, y, batch_size=8, seed=2)
    stream = [yb.copy() for _ in range(3) for _, yb in full]
    per_epoch = len(full)
    run = MiniBatches(x, y, batch_size=8, seed=2)
    seen, saved_at = [], per_epoch + 5  # checkpoint after 5 batches of the second epoch
    for _ in range(2):
        for _, yb in run:
            seen.append(yb.copy())
            if len(seen) == saved_at:
                gf.save({"data": run.state_dict()}, tmp_path / "c.gfc")
        if len(seen) >= saved_at:
            break
    state = gf.load(tmp_path / "c.gfc")["data"]
    assert state["epoch"] == 1 and state["batch"] == 5
    fresh = MiniBatches(x, y, batch_size=8, seed=999)  # the seed comes from the state
    fresh.load_state_dict(state)
    rest = [yb.copy() for _ in range(2) for _, yb in fresh]  # the rest of epoch 1, then epoch 2
    assert fresh.epoch == 3
    assert len(seen[:saved_at]) + len(rest) == len(stream)
    for p, q in zip(seen[:saved_at] + rest, stream):
        np.testing.assert_array_equal(p, q)


def test_state_saved_at_the_end_of_an_epoch_points_to_the_next():
    x, y = dataset()
    b = MiniBatches(x, y, batch_size=50)
    states = [b.state_dict() for _ in b]  # inside the loop body, after each batch
    assert [(s["epoch"], s["batch"]) for s in states] == [(0, 1), (0, 2), (1, 0)]


def test_break_leaves_the_rest_of_the_epoch():
    x, y = dataset(n=40)
    b = MiniBatches(x, y, batch_size=10, shuffle=False)
    for i, (_, yb) in enumerate(b):
        if i == 1:
            break
    assert (b.epoch, b.batch) == (0, 2)
    assert [yb[0] for _, yb in b] == [200, 300]  # the remaining two batches of epoch 0
    assert b.epoch == 1
    next(iter(b))
    b.set_epoch(b.epoch + 1)  # skip the rest of epoch 1
    assert (b.epoch, b.batch) == (2, 0) and len(list(b)) == 4


def test_superseded_iterators_raise():
    x, y = dataset()
    b = MiniBatches(x, y, batch_size=10)
    it = iter(b)
    next(it)
    it2 = iter(b)
    with pytest.raises(RuntimeError, match="superseded"):
        next(it)
    next(it2)
    b.set_epoch(0)
    with pytest.raises(RuntimeError, match="superseded"):
        next(it2)


def test_full_batch_and_online_sgd():
    x, y = dataset(n=13)
    for full in (
        MiniBatches(x, y, batch_size=None),
        MiniBatches(x, y, batch_size=13),
        MiniBatches(x, y, batch_size=1000),
    ):
        assert len(full) == 1
        ((xb, yb),) = list(full)
        assert sorted(yb // 10) == list(range(13)) and xb.shape == x.shape
    unshuffled = MiniBatches(x, y, batch_size=None, shuffle=False)
    ((xb, yb),) = list(unshuffled)
    assert np.shares_memory(xb, x) and xb.shape == x.shape
    online = MiniBatches(x, y, batch_size=1, seed=4)
    assert len(online) == 13
    got = list(online)
    assert all(xb.shape == (1, 4, 3) and yb.shape == (1,) for xb, yb in got)
    np.testing.assert_array_equal(
        np.concatenate([yb for _, yb in got]) // 10, np.random.default_rng([4, 0]).permutation(13)
    )


def test_x_only_and_other_shapes():
    x = np.arange(30).reshape(10, 3)
    b = MiniBatches(x, batch_size=4, shuffle=False)
    got = list(b)
    assert all(isinstance(xb, np.ndarray) for xb in got) and [len(xb) for xb in got] == [4, 4, 2]
    one_d = MiniBatches(np.arange(5), np.ones((5, 2, 2)), batch_size=2)
    assert [xb.shape for xb, _ in one_d] == [(2,), (2,), (1,)]
    listed = MiniBatches([[1, 2], [3, 4], [5, 6]], [0, 1, 2], batch_size=2, shuffle=False)
    xb, yb = next(iter(listed))
    np.testing.assert_array_equal(xb, [[1, 2], [3, 4]])


def test_empty_data_has_no_batches():
    b = MiniBatches(np.zeros((0, 3)), np.zeros(0), batch_size=4)
    assert len(b) == 0 and list(b) == [] and b.epoch == 1
    few = MiniBatches(np.zeros((3, 3)), batch_size=4, drop_last=True)
    assert len(few) == 0 and list(few) == [] and few.epoch == 1
    assert len(MiniBatches(np.zeros((0, 3)), batch_size=None)) == 0


def test_minibatch_errors():
    x, y = dataset(n=10)
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        MiniBatches(x, y[:9])
    with pytest.raises(ValueError, match="at least 1"):
        MiniBatches(x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        MiniBatches(x, y, batch_size=2.5)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        MiniBatches(x, y, batch_size=True)
    with pytest.raises(ValueError, match="non-negative"):
        MiniBatches(x, y, seed=-1)
    with pytest.raises(ValueError, match="scalar"):
        MiniBatches(np.float64(1.0))
    b = MiniBatches(x, y, batch_size=3)
    with pytest.raises(ValueError, match="non-negative"):
        b.set_epoch(-1)
    state = b.state_dict()
    for bad in (
        {**state, "batch_size": 4},
        {**state, "num_samples": 11},
        {**state, "shuffle": False},
        {**state, "drop_last": True},
        {**state, "batch": 4},
        {**state, "epoch": -1},
        {k: v for k, v in state.items() if k != "seed"},
    ):
        with pytest.raises(ValueError):
            b.load_state_dict(bad)
    assert b.state_dict() == state


def test_random_seed_is_recorded():
    x, y = dataset()
    a = MiniBatches(x, y, batch_size=10, seed=None)
    assert a.seed >= 0
    first = [yb.copy() for _, yb in a]
    b = MiniBatches(x, y, batch_size=10, seed=a.seed)
    assert all(np.array_equal(p, q) for p, q in zip(first, [yb for _, yb in b]))
    assert MiniBatches(x, y, seed=None).seed != a.seed


# ---- train_val_split ---------------------------------------------------------------------------------------------
def test_train_val_split_takes_the_last_fraction_like_keras():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    (xt, yt), (xv, yv) = train_val_split(x, y, 0.2)
    np.testing.assert_array_equal(yt, np.arange(8))
    np.testing.assert_array_equal(yv, [8, 9])
    np.testing.assert_array_equal(xv, x[8:])
    assert np.shares_memory(xt, x) and np.shares_memory(yv, y)  # views
    xt, xv = train_val_split(x, fraction=0.25)  # floor(10 * 0.75) = 7
    assert len(xt) == 7 and len(xv) == 3
    for n in range(2, 60):
        for f in (0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.71, 0.9):
            split_at = int(math.floor(n * (1.0 - f)))  # Keras' train_validation_split
            if split_at in (0, n):
                with pytest.raises(ValueError, match="too few"):
                    train_val_split(np.arange(n), fraction=f)
            else:
                xt, xv = train_val_split(np.arange(n), fraction=f)
                assert len(xt) == split_at and list(xv) == list(range(split_at, n))


def test_train_val_split_shuffled():
    x, y = dataset(n=50)
    (xt, yt), (xv, yv) = train_val_split(x, y, 0.3, shuffle=True, seed=3)
    assert len(yt) == 35 and len(yv) == 15
    assert sorted(np.concatenate([yt, yv]) // 10) == list(range(50))
    np.testing.assert_array_equal(xt[:, 0, 0] * 10, yt)
    order = np.random.default_rng(3).permutation(50)
    np.testing.assert_array_equal(yv // 10, order[35:])
    (_, yt2), _ = train_val_split(x, y, 0.3, shuffle=True, seed=3)
    np.testing.assert_array_equal(yt, yt2)
    (_, yt3), _ = train_val_split(x, y, 0.3, shuffle=True, seed=4)
    assert not np.array_equal(yt, yt3)


def test_train_val_split_errors():
    x, y = dataset(n=10)
    for bad in (0, 0.0, 1, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            train_val_split(x, y, bad)
    with pytest.raises(TypeError, match="must be a number"):
        train_val_split(x, y, "0.2")
    with pytest.raises(ValueError, match="x has 10 samples but y has 8"):
        train_val_split(x, y[:8], 0.2)
    with pytest.raises(ValueError, match="too few"):
        train_val_split(x[:1], fraction=0.5)


# ---- a training run resumed from a checkpoint -------------------------------------------------------------------
def _train(params, opt, scaler_state, batches, steps, checkpoint=None, path=None):
    """Linear regression by mini-batch Adam; optionally checkpoint after `checkpoint` steps."""
    w, b = params
    scaler = Standardizer()
    scaler.load_state_dict(scaler_state)
    done = 0
    while done < steps:
        for xb, yb in batches:
            xs = scaler.transform(xb)
            err = xs @ w + b - yb
            grads = [(xs.T @ err / len(xb)).astype(np.float32), np.array([err.mean()], np.float32)]
            opt.step(grads)
            done += 1
            if done == checkpoint:
                gf.save(
                    {
                        "params": {"w": w, "b": b},
                        "optimizer": opt.state_dict(),
                        "data": batches.state_dict(),
                        "scaler": scaler.state_dict(),
                        "steps": done,
                    },
                    path,
                )
            if done == steps:
                return


@pytest.mark.parametrize("checkpoint_step", [7, 13, 20])  # mid-epoch, mid-epoch, end of an epoch
def test_training_resumed_from_a_checkpoint_continues_bitwise(tmp_path, checkpoint_step):
    r = rng(8)
    x = (r.standard_normal((70, 5)) * 4 + 2).astype(np.float32)
    y = (x @ r.standard_normal(5) + 0.5).astype(np.float32)
    x_train, _ = train_val_split(x, fraction=0.2)
    scaler = Standardizer().fit(x_train)
    path = tmp_path / "run.gfc"

    w, b = np.zeros(5, np.float32), np.zeros(1, np.float32)
    opt = gf.optim.Adam([w, b], lr=0.05)
    batches = MiniBatches(x[:56], y[:56], batch_size=5, seed=1)  # 12 batches per epoch, the last of 1
    _train([w, b], opt, scaler.state_dict(), batches, steps=31, checkpoint=checkpoint_step, path=path)

    state = gf.load(path)
    w2, b2 = state["params"]["w"], state["params"]["b"]
    opt2 = gf.optim.Adam([w2, b2], lr=0.05)
    opt2.load_state_dict(state["optimizer"])
    batches2 = MiniBatches(x[:56], y[:56], batch_size=5, seed=0)
    batches2.load_state_dict(state["data"])
    _train([w2, b2], opt2, state["scaler"], batches2, steps=31 - state["steps"])
    assert w.tobytes() == w2.tobytes() and b.tobytes() == b2.tobytes()
    assert (batches.epoch, batches.batch) == (batches2.epoch, batches2.batch)


def test_load_digits_split_is_a_stratified_70_10_20_split():
    pytest.importorskip("sklearn")
    x_train, y_train, x_val, y_val, x_test, y_test = gfdata.load_digits_split(0)
    assert (len(x_train), len(x_val), len(x_test)) == (1257, 180, 360)
    assert all(x.dtype == np.float32 and x.shape[1] == 64 for x in (x_train, x_val, x_test))
    for y in (y_train, y_val, y_test):  # every class in every part, in about equal shares
        assert np.bincount(y, minlength=10).min() >= 0.08 * len(y)
    again = gfdata.load_digits_split(0)
    np.testing.assert_array_equal(again[0], x_train)
