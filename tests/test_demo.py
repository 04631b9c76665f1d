"""`python -m gradfuse demo` (issue 11, item 11): every --epochs from 0 to 5 runs (the warmup and
the cosine decay used to need more than 5 epochs: "Expected positive T_max"), and the folder of
--out is created, or refused, before any training."""

from __future__ import annotations

import pytest

from gradfuse import demo, train
from gradfuse.__main__ import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.fixture
def small_digits(monkeypatch):
    """A fifth of the digits, so that 0-5 epochs of the demo take a moment."""
    split = demo.load_digits_split

    def small(seed):
        return tuple(a[: len(a) // 5] for a in split(seed))

    monkeypatch.setattr(demo, "load_digits_split", small)


@pytest.mark.parametrize("epochs", range(6))
def test_every_small_number_of_epochs_runs(small_digits, tmp_path, capsys, epochs):
    out = tmp_path / "new" / "folder" / "curves.png"  # missing folders are created
    assert main(["demo", "--epochs", str(epochs), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{epochs} epochs in" in printed and "test accuracy" in printed
    assert out.exists() == (epochs > 0)
    if epochs == 0:
        assert "no curves" in printed


def test_an_out_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("fit was called")

    monkeypatch.setattr(train, "fit", no_training)
    (tmp_path / "a-file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "a-file" / "curves.png")]) == 2
    assert "cannot write --out" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path)]) == 2  # a folder, not a file name
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(OSError):
        demo.run(out=str(tmp_path / "a-file" / "curves.png"))
