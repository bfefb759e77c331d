"""Every bad input a user can hand the command is refused: exit 1, one message that names what is
wrong and where (file, row, column, key or option), and never a traceback.

One table lists the cases: the files a case writes, the command line (``{tmp}`` is the case's
folder, ``{post}`` a valid loss posterior, ``{hyper}`` a valid hyperparameter posterior), and a
fragment the message must contain. The same files are fuzzed in ``test_runs.py`` and below.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bayes_scaling.cli import app
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import HyperSpec, ModelSpec, SpecError
from tests.simulate import simulate_grid, simulate_runs

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "stdlib_sample.txt"
GOOD_CSV = "run_id,arch,n_active,tokens,loss\n001,dense,1e6,1e8,3.0\n002,dense,2e6,1e8,2.9\n"
TINY = ["--draws", "60", "--tune", "60", "--chains", "1", "--extend", "0"]

Content = str | bytes | Callable[[Path], object]


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    fragment: str
    files: dict[str, Content] = field(default_factory=dict)


def _parquet(frame: pd.DataFrame) -> Callable[[Path], object]:
    return lambda path: frame.to_parquet(path)


def _damaged(kind: str) -> Callable[[Path], object]:
    """A copy of the shared loss posterior, damaged one way (applied to the case's file)."""

    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            path.write_bytes(bytes(data[: len(data) // 2]))
        elif kind == "zeroed":
            with h5py.File(path, "r") as handle:  # 8 bytes inside the draws of log_e
                offset = handle["posterior"]["log_e"].id.get_offset()
            data[offset + 16 : offset + 24] = bytes(8)
            path.write_bytes(bytes(data))

    return damage


def _foreign(path: Path) -> None:
    xr.Dataset({"x": ("a", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")


TIMESTAMPS = pd.DataFrame({"run_id": ["a", "b"], "arch": ["dense"] * 2, "n_active": [1e6, 2e6],
                           "tokens": pd.to_datetime(["2020-01-01", "2021-01-01"]),
                           "loss": [3.0, 2.9]})  # fmt: skip
BOOLEANS = TIMESTAMPS.assign(tokens=[1e8, 1e8], loss=[True, False])
RUN = {"run_id": "a", "arch": "dense", "n_active": 1e6, "tokens": 1e8, "loss": 3.0}
FIT = ("fit", "--dataset", "deepmind-routing", "--out", "{tmp}/x.nc")
SWEEP_ROW = json.dumps({**RUN, "status": "finished"})
CORPUS_META = json.dumps({"source": "/elsewhere", "val_fraction": 0.05, "fingerprint": "x"})
TRAIN_TOML = (
    f"d_model = 16\nn_layers = 1\nn_heads = 2\nseq_len = 16\ntokens = 4096\nbatch_size = 4\n"
    f'eval_tokens = 1024\ndata_source = "{SAMPLE}"\ndata_dir = "{{tmp}}/corpus"\n'
)

CASES = [
    # Posterior files that are not intact posteriors, to predict, decide and decide --hyper.
    Case("truncated posterior", ("predict", "{tmp}/p.nc", "--n-active", "1e9", "--tokens",
         "1e10"), "not a readable netCDF", {"p.nc": _damaged("truncated")}),
    Case("empty posterior", ("predict", "{tmp}/p.nc", "--n-active", "1e9", "--tokens", "1e10"),
         "not a readable netCDF", {"p.nc": b""}),
    Case("random posterior", ("decide", "{tmp}/p.nc", "--flops", "1e21"),
         "not a readable netCDF", {"p.nc": np.random.default_rng(0).bytes(4096)}),
    Case("foreign netCDF", ("predict", "{tmp}/p.nc", "--n-active", "1e9", "--tokens", "1e10"),
         "not a bayes_scaling posterior", {"p.nc": _foreign}),
    Case("foreign --hyper", ("decide", "{post}", "--flops", "1e21", "--hyper", "{tmp}/h.nc"),
         "not a bayes_scaling posterior", {"h.nc": _foreign}),
    Case("missing posterior", ("predict", "{tmp}/none.nc", "--n-active", "1", "--tokens", "1"),
         "does not exist"),
    Case("zeroed bytes in posterior", ("predict", "{tmp}/p.nc", "--n-active", "1e9",
         "--tokens", "1e10"), "do not match the stored checksum", {"p.nc": _damaged("zeroed")}),
    # Run tables: encodings, foreign files, ambiguous coercions, overflowing derived columns.
    Case("binary CSV", ("validate", "{tmp}/r.csv"), "not UTF-8", {"r.csv": bytes(range(256))}),
    Case("UTF-16 CSV", ("validate", "{tmp}/r.csv"), "not UTF-8",
         {"r.csv": GOOD_CSV.encode("utf-16")}),
    Case("NUL bytes in CSV", ("validate", "{tmp}/r.csv"), "binary content",
         {"r.csv": "run_id,arch\n\x00,\x00\n"}),
    Case("random Parquet", ("validate", "{tmp}/r.parquet"), "not a readable Parquet file",
         {"r.parquet": np.random.default_rng(1).bytes(300)}),
    Case("Parquet timestamps", ("validate", "{tmp}/r.parquet"),
         "column 'tokens': holds dates or times", {"r.parquet": _parquet(TIMESTAMPS)}),
    Case("Parquet booleans", ("validate", "{tmp}/r.parquet"), "column 'loss': holds booleans",
         {"r.parquet": _parquet(BOOLEANS)}),
    Case("JSON list as arch", ("validate", "{tmp}/r.jsonl"),
         "row 1, column 'arch': expected a text label, got a list",
         {"r.jsonl": json.dumps({**RUN, "arch": ["dense"]}) + "\n"}),
    Case("duplicate JSON key", ("validate", "{tmp}/r.jsonl"), "row 1: key(s) ['loss'] given",
         {"r.jsonl": '{"run_id": "a", "arch": "dense", "n_active": 1, "tokens": 1, '
                     '"loss": 3, "loss": 2}\n'}),
    Case("duplicate loss column", ("validate", "{tmp}/r.csv"),
         "column 'loss': the header names this column more than once",
         {"r.csv": "run_id,arch,n_active,tokens,loss,loss\na,dense,1e6,1e8,3,2\n"}),
    Case("1e300 tokens", ("validate", "{tmp}/r.csv"), "row 1, column 'tokens': 6 * n_active",
         {"r.csv": "run_id,arch,n_active,tokens,loss\na,dense,1e9,1e300,3\n"}),
    Case("JSON Lines rows are their lines", ("validate", "{tmp}/r.jsonl"),
         "row 3, column 'n_active': -1 is out of range",
         {"r.jsonl": json.dumps(RUN) + "\n\n" + json.dumps({**RUN, "run_id": "b",
                                                             "n_active": -1}) + "\n"}),
    Case("every run diverged", ("validate", "{tmp}/r.jsonl", "--model", "chinchilla"),
         "every run has status 'diverged'",
         {"r.jsonl": json.dumps({**RUN, "status": "diverged"}) + "\n"}),
    Case("quoted CSV field beyond the csv limit", ("validate", "{tmp}/r.csv"),
         "not a readable CSV table", {"r.csv": '"' + "x" * 200_000 + '"\n'}),
    Case("unknown trainer status", ("validate", "{tmp}/r.jsonl"), "unknown status 'running'",
         {"r.jsonl": json.dumps({**RUN, "status": "running"}) + "\n"}),
    Case("validate against a law", ("validate", "{tmp}/r.csv", "--model", "hyper/steplaw"),
         "column 'lr': the hyperparameter model needs this column on every run",
         {"r.csv": GOOD_CSV}),
    Case("rows keep their numbers past diverged runs", ("validate", "{tmp}/r.jsonl", "--model",
         "hyper/steplaw"), "row 3, column 'lr'", {"r.jsonl": "".join(
             json.dumps({**RUN, "run_id": f"r{i}", "lr": lr, "batch_tokens": 512.0,
                         "status": status}) + "\n"
             for i, (lr, status) in enumerate([(1e-3, "diverged"), (1e-3, "finished"),
                                               (None, "finished"), (2e-3, "finished")]))}),
    Case("wrong file for a data set", ("datasets", "show", "chinchilla", "--path", "{tmp}/r.csv"),
         "not the 'chinchilla' data set's file (missing column 'Model Size')",
         {"r.csv": GOOD_CSV}),
    Case("path for a bundled data set", ("datasets", "show", "porian", "--path", "{tmp}"),
         "bundled with the package; it takes no --path"),
    # Hypothesis files: values of the wrong type, priors outside their support.
    Case("law as a list", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]), "law must be str",
         {"m.toml": 'law = ["experts"]\n'}),
    Case("prior mu as a list", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "priors.log_a_ref (Normal(mu, sigma, spread)): mu must be a number",
         {"m.toml": 'law = "experts"\n[priors]\nlog_a_ref = { mu = [1.0] }\n'}),
    Case("prior sigma zero", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "priors.gamma (Normal(mu, sigma, spread)): sigma must be > 0",
         {"m.toml": 'law = "experts"\n[priors]\ngamma = { sigma = 0.0 }\n'}),
    Case("prior mu nan", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]), "mu must be finite",
         {"m.toml": 'law = "experts"\n[priors]\ngamma = { mu = nan }\n'}),
    Case("Gamma prior given mu", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "priors.nu (Gamma(alpha, beta)): unknown field(s) ['mu']",
         {"m.toml": 'law = "experts"\n[priors]\nnu = { mu = 3.0 }\n'}),
    Case("literature_priors as text", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "literature_priors must be true/false, not 'no'",
         {"m.toml": 'law = "experts"\nliterature_priors = "no"\n'}),
    Case("off_bowl_above as text", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "off_bowl_above must be int or float, not '0.2'",
         {"m.toml": 'kind = "hyper"\noff_bowl_above = "0.2"\n'}),
    Case("retired key", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "unknown key(s) ['diverged_above']", {"m.toml": 'kind = "hyper"\ndiverged_above = 0.2\n'}),
    Case("sampler table of the wrong type", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]),
         "sampler.draws must be a whole number >= 1",
         {"m.toml": 'law = "experts"\n[sampler]\ndraws = 10.5\n'}),
    Case("not TOML", ("fit", "--model", "{tmp}/m.toml", *FIT[1:]), "not valid TOML",
         {"m.toml": "law = \n"}),
    Case("unknown model name", ("fit", "--model", "kaplan1999", *FIT[1:]),
         "neither a file nor a shipped hypothesis"),
    # Sampler options.
    Case("zero chains", ("fit", "--model", "chinchilla", *FIT[1:], "--chains", "0"),
         "--chains must be a whole number >= 1, not 0"),
    Case("negative seed", ("fit", "--model", "chinchilla", *FIT[1:], "--seed", "-1"),
         "--seed -1: expected a non-negative integer"),
    Case("extend without limit", ("fit", "--model", "chinchilla", *FIT[1:], "--extend", "9"),
         "--extend must be a whole number from 0 to 3, not 9"),
    Case("zero draws", ("fit", "--model", "chinchilla", *FIT[1:], "--draws", "0"),
         "--draws must be a whole number >= 1, not 0"),
    Case("unknown sampler", ("fit", "--model", "chinchilla", *FIT[1:], "--sampler", "foo"),
         "--sampler 'foo' is unknown"),
    Case("target_accept 1", ("fit", "--model", "chinchilla", *FIT[1:], "--target-accept", "1"),
         "--target-accept must be a number in [0.5, 1)"),
    Case("unwritable --out", ("fit", "--model", "chinchilla", "--dataset", "chinchilla",
         "--out", "/proc/bayes_scaling/x.nc"), "--out /proc/bayes_scaling/x.nc cannot be written"),
    Case("folder as --out", ("fit", "--model", "chinchilla", "--dataset", "chinchilla", "--out",
         "{tmp}"), "is a folder"),
    # Prediction and decision requests the posterior cannot serve.
    Case("infinite n_active", ("predict", "{post}", "--n-active", "inf", "--tokens", "1e10"),
         "n_active = inf (point 1); expected a finite number > 0"),
    Case("zero experts", ("predict", "{post}", "--n-active", "1e9", "--tokens", "1e10",
         "--experts", "0"), "experts = 0 (point 1); expected a finite number >= 1"),
    Case("negative experts", ("predict", "{post}", "--n-active", "1e9", "--tokens", "1e10",
         "--experts", "-3"), "experts = -3 (point 1)"),
    Case("unwritable --plot", ("predict", "{post}", "--n-active", "1e9", "--tokens", "1e10",
         "--arch", "dense", "--plot", "/proc/bayes_scaling/p.png"), "--plot /proc/bayes_scaling"),
    Case("unwritable export", ("datasets", "export", "porian", "--out", "/proc/x/p.csv"),
         "--out /proc/x/p.csv cannot be written"),
    Case("infinite n_active, hyper", ("predict", "{hyper}", "--n-active", "inf", "--tokens",
         "1e10"), "n_active = inf (point 1)"),
    Case("n_total below n_active", ("predict", "{hyper}", "--n-active", "1e9", "--tokens",
         "1e10", "--n-total", "1e8"), "n_total = 1e+08 < n_active = 1e+09"),
    Case("truncated --hyper", ("decide", "{post}", "--flops", "1e21", "--hyper", "{tmp}/p.nc"),
         "not a readable netCDF", {"p.nc": _damaged("truncated")}),
    Case("predict --prob 1.5", ("predict", "{post}", "--n-active", "1e9", "--tokens", "1e10",
         "--prob", "1.5"), "--prob 1.5: expected a probability strictly between 0 and 1"),
    Case("decide --prob 1.5", ("decide", "{post}", "--flops", "1e21", "--prob", "1.5"),
         "--prob 1.5: expected a probability strictly between 0 and 1"),
    Case("decide with a hyper posterior", ("decide", "{hyper}", "--flops", "1e21"),
         "need a loss-law posterior"),
    Case("loss posterior as --hyper", ("decide", "{post}", "--flops", "1e21", "--hyper",
         "{post}"), "hyperparameter posterior"),
    # The trainer: cut-off tables, foreign checkpoints, stale corpora.
    Case("cut-off last row of a sweep table", ("sweep", str(ROOT / "models/sweeps/tiny.toml"),
         "--out", "{tmp}/runs.jsonl"), "runs.jsonl, line 2",
         {"runs.jsonl": SWEEP_ROW + "\n" + SWEEP_ROW[:20]}),
    Case("sweep base not a table", ("sweep", "{tmp}/s.toml", "--out", "{tmp}/runs.jsonl"),
         "base must be a table", {"s.toml": "base = 3\n"}),
    Case("missing corpus source", ("train", "{tmp}/run.toml", "--out", "{tmp}/runs.jsonl"),
         "nowhere.txt", {"run.toml": TRAIN_TOML.replace(str(SAMPLE), "/nowhere.txt")}),
    Case("crafted checkpoint", ("train", "{tmp}/run.toml", "--out", "{tmp}/runs.jsonl",
         "--workdir", "{tmp}/run"), "not a loadable checkpoint",
         {"run.toml": TRAIN_TOML, "run/checkpoint.pt": b"\x80\x04\x95garbage"}),
    Case("stale corpus", ("train", "{tmp}/run.toml", "--out", "{tmp}/runs.jsonl"), "corpus",
         {"run.toml": TRAIN_TOML, "corpus/meta.json": CORPUS_META}),
]  # fmt: skip


@pytest.fixture(scope="module")
def posteriors(tmp_path_factory: pytest.TempPathFactory, small_fit) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """A small loss posterior and a small hyperparameter posterior, saved (a few seconds)."""
    folder = tmp_path_factory.mktemp("posteriors")
    small = {"draws": 60, "tune": 60, "chains": 1}
    loss = small_fit(simulate_runs(seed=1, runs_per_arch=8), ModelSpec(), **small)
    hyper = small_fit(simulate_grid(seed=2), HyperSpec(), **small)
    return {"post": loss.save(folder / "post.nc"), "hyper": hyper.save(folder / "hyper.nc")}


def _write(folder: Path, name: str, content: Content, posteriors: dict[str, Path]) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content.replace("{tmp}", str(folder)), encoding="utf-8")
    elif name.endswith(".nc") and content.__name__ == "damage":  # type: ignore[union-attr]
        shutil.copy(posteriors["post"], path)
        content(path)
    else:
        content(path)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_with_a_message_naming_it(
    case: Case, tmp_path: Path, posteriors: dict[str, Path]
) -> None:
    for name, content in case.files.items():
        _write(tmp_path, name, content, posteriors)
    args = [
        a.replace("{tmp}", str(tmp_path))
        .replace("{post}", str(posteriors["post"]))
        .replace("{hyper}", str(posteriors["hyper"]))
        for a in case.args
    ]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1, result.output
    assert case.fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert "converged" not in result.output  # refused before any sampling


def test_run_ids_stay_text_and_diverged_rows_are_counted(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(GOOD_CSV)
    from bayes_scaling.runs import read_runs

    assert read_runs(tmp_path / "r.csv")["run_id"].tolist() == ["001", "002"]
    rows = [{**RUN, "run_id": f"r{i}", "status": "finished"} for i in range(3)]
    rows[1].update(status="diverged", loss=math.log(256))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 0, result.output
    assert "1 run(s) have status 'diverged' and are left out of every fit: r1" in result.output


# Hypothesis files fuzzed: any mapping of known keys to TOML-like values is either a valid spec
# or a SpecError (never a TypeError, KeyError or a sampler panic later).
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["experts", "chinchilla", "pooled", "hierarchical",
                                          "steplaw", "loss", "hyper", "alpha"]),
    st.lists(st.sampled_from(["alpha", "beta", "log_n", "x"]), max_size=3),
    st.dictionaries(st.sampled_from(["draws", "tune", "chains", "target_accept", "sampler",
                                     "adaptation", "extend", "bogus"]),
                    st.one_of(st.integers(-2, 5000), st.floats(allow_nan=True), st.booleans(),
                              st.sampled_from(["nutpie", "pymc", "low_rank", "diag", "x"])),
                    max_size=4),
    st.dictionaries(st.sampled_from(["alpha", "gamma", "nu", "sigma", "lr_0", "zz"]),
                    st.dictionaries(st.sampled_from(["mu", "sigma", "spread", "median", "alpha",
                                                     "beta", "q"]),
                                    st.one_of(st.floats(allow_nan=True), st.booleans(),
                                              st.text(max_size=3)), max_size=3), max_size=3),
)  # fmt: skip
_KEYS = st.sampled_from(["law", "pooling", "kind", "form", "shared", "literature_priors",
                         "priors", "lr_terms", "off_bowl_above", "sampler", "oops"])  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_fuzzed_hypothesis_files_are_valid_or_a_spec_error(data: dict[str, object]) -> None:
    from bayes_scaling.spec import _from_dict

    try:
        spec = _from_dict(dict(data), origin="fuzz.toml")
    except SpecError as error:
        assert "fuzz.toml" in str(error)
        return
    # A spec that was accepted has usable sampler settings and priors (finite, in support).
    assert spec.sampler.draws >= 1 and 0.5 <= spec.sampler.target_accept < 1.0
    assert 0 <= spec.sampler.extend <= 3
    for prior in spec.resolved_priors().values():
        for value in vars(prior).values():
            assert math.isfinite(value)


def test_posterior_round_trip_keeps_the_checksum_valid(posteriors: dict[str, Path]) -> None:
    # The damaged-file cases above are only meaningful if an intact file loads.
    for path in posteriors.values():
        assert Posterior.load(path).idata["posterior"].sizes["draw"] == 60


def test_decide_with_hyper_reports_the_lr_and_batch_predict_reports(
    posteriors: dict[str, Path],
) -> None:
    # The good path beside the refusals: decide --hyper and predict on the hyper posterior give
    # the same (lowest expected penalty) lr and batch for the chosen configuration.
    runner = CliRunner()
    decided = runner.invoke(
        app, ["decide", str(posteriors["post"]), "--flops", "1e21", "--hyper",
              str(posteriors["hyper"]), "--arch", "dense", "--prob", "0.8", "--json"],
    )  # fmt: skip
    assert decided.exit_code == 0, decided.output
    choice = json.loads(decided.output)
    predicted = runner.invoke(
        app, ["predict", str(posteriors["hyper"]), "--n-active", str(choice["n_active"]),
              "--tokens", str(choice["tokens"]), "--prob", "0.8", "--json"],
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.output)
    assert choice["lr"]["value"] == pytest.approx(answer["lr"], rel=1e-6)
    assert choice["batch_tokens"]["value"] == pytest.approx(answer["batch_tokens"], rel=1e-6)
    assert choice["lr"]["interval"] == pytest.approx(answer["lr_interval"], rel=1e-6)
    assert choice["lr"]["prob"] == 0.8
