"""The one atomic writer: complete or untouched, umask permissions, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bayes_scaling._io import OutputPathError, atomic_write, check_writable


@pytest.fixture
def umask_022():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path: Path, umask_022: None) -> None:
    path = atomic_write(tmp_path / "a.txt", "text")
    # mkstemp alone would give 0o600: other users of a shared cluster could not read results.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "text"


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "a.txt", b"old")

    def explode(target: Path) -> None:
        target.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, explode)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_unwritable_outputs_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="is a folder"):
        check_writable(tmp_path)
    blocker = atomic_write(tmp_path / "file", "x")
    with pytest.raises(OutputPathError, match="cannot be written"):
        check_writable(blocker / "inside.nc")  # a file where a folder should be
    assert check_writable(tmp_path / "new" / "out.nc") == tmp_path / "new" / "out.nc"
    assert list((tmp_path / "new").iterdir()) == []  # the probe is gone


def test_posterior_and_run_table_files_respect_the_umask(
    tmp_path: Path, umask_022: None, small_fit
) -> None:  # type: ignore[no-untyped-def]
    from bayes_scaling.runs import write_runs
    from tests.simulate import simulate_runs

    runs = simulate_runs(seed=1, runs_per_arch=6)
    table = write_runs(runs, tmp_path / "runs.parquet")
    posterior = small_fit(runs, draws=20, tune=20, chains=1).save(tmp_path / "post.nc")
    for path in (table, posterior):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
