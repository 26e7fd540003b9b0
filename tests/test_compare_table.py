"""`fod compare`'s tables from rows worked by hand: the per-run table, and the means over
the seeds of a row (runs NAME, NAME-sN) only where a row has several."""

from __future__ import annotations

from pathlib import Path

import torch

from fod.cli import main
from training.compare import Row, seed_means, table


def _row(run: str, method: str, ap50: float, ap: float, noisy: bool = True) -> Row:
    m = {"ap50": ap50, "ap": ap, "ap_small": ap, "ar": ap, "ar_small": ap}
    n = {"ap50": ap50 / 2, "ap": ap / 2} if noisy else None
    return Row(run, "GFL-R18", method, m, n, 11.6, 10.1)


def test_means_over_the_seeds_of_each_row() -> None:
    rows = [
        _row("teacher", "teacher", 0.6, 0.3),
        _row("ours", "ours", 0.30, 0.15),
        _row("ours-s1", "ours", 0.36, 0.17),
        _row("ours-w2", "ours w2", 0.40, 0.20),  # a row of its own, not a seed of `ours`
        _row("ours-w2-s1", "ours w2", 0.44, 0.18),
        _row("ours-w2-s12", "ours w2", 0.42, 0.22),
    ]
    md = seed_means(rows).splitlines()
    assert md[1] == "Mean (min-max) over each row's seeds:"
    body = [[c.strip() for c in line.strip("|").split("|")] for line in md[5:]]
    assert [b[0] for b in body] == ["teacher", "ours", "ours-w2"]
    assert body[1][1:] == ["ours", "2", "33.0 (30.0-36.0)", "16.0 (15.0-17.0)",
                           "16.5 (15.0-18.0)", "8.0 (7.5-8.5)"]  # fmt: skip
    assert body[2][2:4] == ["3", "42.0 (40.0-44.0)"] and body[0][2:4] == ["1", "60.0"]
    assert seed_means(rows).startswith("\n") and seed_means(rows) in table(rows, (640, 384))[0]


def test_no_means_where_every_row_ran_once_or_without_noise() -> None:
    rows = [_row("student", "alone", 0.3, 0.1), _row("ours", "ours", 0.4, 0.2)]
    assert seed_means(rows) == ""
    assert table(rows, (640, 384))[0].count("\n") == 4  # header, rule, two rows
    clean = [_row("ours", "ours", 0.3, 0.1, False), _row("ours-s1", "ours", 0.5, 0.3, False)]
    head = seed_means(clean).splitlines()[3]
    assert head == "| row | method | runs | AP50 | AP |"


def test_compare_evaluates_at_the_runs_training_size(
    trained: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """Without --size, the size the runs were trained at (before: 1280x800 whatever they
    learnt at); runs of several sizes, or a checkpoint that records none, need --size."""
    state = torch.load(trained / "last.pt", map_location="cpu", weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**state, "train_config": {**state["train_config"], "size": [640, 384]}}, other)
    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in state.items() if k != "train_config"}, bare)
    out = tmp_path / "table"
    argv = ["compare", "--data", str(small_set), "--device", "cpu", "--out", str(out), "--runs"]
    assert main([*argv, str(trained)]) == 0
    assert "| GMACs @320x256 |" in (out / "compare.md").read_text()
    for runs, why in (
        ([trained, other], f"different sizes ({trained} 320x256, {other} 640x384)"),
        ([bare], f"{bare}: records no training size: pass --size"),
    ):
        capsys.readouterr()
        assert main([*argv, *map(str, runs)]) == 2
        assert why in capsys.readouterr().err
    assert main([*argv, str(bare), "--size", "320x256"]) == 0
