"""Unit tests of the trainer: threshold choice, metrics, and `python -m trainer train`.

The command-line runs are subprocesses, started together by one module fixture
so that their interpreter start-ups overlap; each test then checks one of them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn
from threadpoolctl import threadpool_limits

from trainer.cli import main as trainer_main
from trainer.evaluate import classification_metrics, threshold_for_recall
from trainer.generate import generate, write_table
from trainer.train import CANARY_SIZE, TrainOptions, train
from txrisk.bundle import BundleMetadata, list_versions, load_bundle, read_metadata
from txrisk.errors import DataError
from txrisk.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
ETHEREUM_DATA = REPO / "data" / "ethereum" / "transactions.csv.gz"
PROG = "python -m trainer"


# ------------------------------------------------------------------ threshold


def recall_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    return float((scores[y == 1] >= threshold).mean())


@pytest.fixture(scope="module")
def noisy_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(5_000) < 0.05).astype(np.int64)
    scores = rng.normal(loc=1.5 * y, scale=1.0)
    # Ties, as tree models give: a handful of distinct score values per bucket.
    return y, np.round(scores, 1)


@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_threshold_reaches_target_recall_and_is_the_highest(
    noisy_scores: tuple[np.ndarray, np.ndarray], target: float
) -> None:
    y, scores = noisy_scores
    threshold = threshold_for_recall(y, scores, target)

    assert threshold in set(scores.tolist())
    assert recall_at(y, scores, threshold) >= target
    higher = np.unique(scores[scores > threshold])
    assert higher.size > 0
    # Any higher cut-off (the next distinct score) falls short of the target.
    assert recall_at(y, scores, float(higher[0])) < target


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.3, 0.6), (1 / 3, 0.6), (0.5, 0.4), (2 / 3, 0.4), (0.7, 0.3), (1.0, 0.3)],
)
def test_threshold_on_a_hand_made_example(target: float, expected: float) -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert threshold_for_recall(y, scores, target) == expected


def test_classification_metrics_on_a_hand_made_example() -> None:
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.8, 0.35, 0.9])
    metrics = classification_metrics(y, scores, threshold=0.35)
    # Flagged at >= 0.35: 0.4, 0.8 (legitimate) and 0.35, 0.9 (fraud).
    assert metrics == pytest.approx(
        {
            "roc_auc": 4 / 6,  # 4 of the 6 (fraud, legitimate) pairs ordered right
            "pr_auc": 0.75,  # 0.5 * 1 (at 0.9) + 0.5 * 2/4 (at 0.35)
            "precision": 0.5,
            "recall": 1.0,
            "false_positive_rate": 2 / 3,
            "flag_rate": 0.8,
            "true_positives": 2.0,
            "false_positives": 2.0,
            "true_negatives": 1.0,
            "false_negatives": 0.0,
        },
        abs=1e-12,
    )


def test_classification_metrics_when_nothing_is_flagged() -> None:
    y = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    metrics = classification_metrics(y, scores, threshold=0.9)
    assert (metrics["precision"], metrics["recall"], metrics["flag_rate"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert metrics["false_negatives"] == 2.0
    assert metrics["roc_auc"] == 0.75


# -------------------------------------------------------- training in-process


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "payments.csv"
    write_table(generate(5_000, seed=3), path)
    return path


def test_training_is_reproducible(small_file: Path, tmp_path: Path) -> None:
    spec = load_spec("gateway")
    with threadpool_limits(limits=1):
        first = train(small_file, spec, tmp_path, TrainOptions(seed=4, version="one"))
        second = train(small_file, spec, tmp_path, TrainOptions(seed=4, version="two"))
    assert first.threshold == second.threshold
    assert first.metrics == second.metrics
    assert first.canary == second.canary
    assert [m.version for m in list_versions(tmp_path)] == ["one", "two"]


def test_training_needs_ten_rows_of_each_class(
    small_file: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(small_file)
    frame["is_fraud"] = 0
    frame.loc[:8, "is_fraud"] = 1
    path = tmp_path / "nine.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"only 9 rows of the rarer class; at least 10"):
        train(path, load_spec("gateway"), tmp_path / "models", TrainOptions())
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------ command-line training


def quick_train_flags() -> list[str]:
    """`--no-report` where `train` has it: the bundle report (plots) is not under
    test here and would multiply the training time."""
    import argparse

    from trainer.cli import build_parser

    (commands,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    options = {o for a in commands.choices["train"]._actions for o in a.option_strings}
    return ["--no-report"] if "--no-report" in options else []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without txrisk or Kafka settings (and no signing key)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TXRISK_", "KAFKA_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    # Several trainers run at once: one native thread each, or they thrash.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


@dataclass(frozen=True)
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def option(self, flag: str) -> str:
        return self.argv[self.argv.index(flag) + 1]


def run_all(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, Run]:
    """Run `python -m trainer ARGS` for every entry at once; wait for them all."""
    started = {
        name: (
            argv,
            subprocess.Popen(
                [sys.executable, "-m", "trainer", *argv],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for name, argv in commands.items()
    }
    runs = {}
    for name, (argv, process) in started.items():
        out, err = process.communicate(timeout=180)
        runs[name] = Run(argv, process.returncode, out, err)
    return runs


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Run:
    """`trainer.cli.main(argv)` as the entry point runs it; exceptions propagate."""
    capsys.readouterr()
    try:
        code = trainer_main(argv)
    except SystemExit as exc:  # argparse's own exits
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Run(argv, code, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, small_file: Path) -> dict[str, Run]:
    """The real entry point, as subprocesses: two trainings and two bad calls."""
    folder = tmp_path_factory.mktemp("cli")
    models = ["--model-dir", str(folder / "models")]
    commands = {
        "train-small": [
            "train",
            "--data",
            str(small_file),
            *models,
            "--version",
            "small",
            *quick_train_flags(),
        ],
        "train-ethereum": [
            "train",
            *("--data", str(ETHEREUM_DATA), "--spec", "ethereum"),
            *models,
            *("--version", "eth"),
            *quick_train_flags(),
        ],
        "missing-file": ["train", "--data", str(folder / "nope.csv"), *models],
        "unknown-subcommand": ["fit", "--data", str(small_file)],
    }
    # WARNING: the trainer's INFO progress lines are not part of an error.
    return run_all(commands, clean_env(TXRISK_LOG_LEVEL="WARNING"))


@pytest.fixture(scope="module")
def small_bundle(runs: dict[str, Run]) -> BundleMetadata:
    run = runs["train-small"]
    assert run.returncode == 0, run.stderr
    return read_metadata(Path(run.option("--model-dir")) / "small")


def test_cli_train_prints_a_summary(
    runs: dict[str, Run], small_bundle: BundleMetadata
) -> None:
    run = runs["train-small"]
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("version small: ROC AUC ")
    assert f"threshold {small_bundle.threshold:.4f}" in lines[0]
    assert "on 1000 test rows" in lines[0]
    assert lines[1] == f"bundle: {Path(run.option('--model-dir')) / 'small'}"


def test_cli_train_writes_complete_metadata(
    small_bundle: BundleMetadata, small_file: Path
) -> None:
    meta = small_bundle
    assert meta.version == "small"
    assert meta.estimator == "HistGradientBoostingClassifier"
    assert meta.spec == load_spec("gateway")
    assert 0.0 < meta.threshold < 1.0
    assert meta.target_recall == 0.9

    for name in ["roc_auc", "pr_auc", "precision", "recall", "false_positive_rate"]:
        assert 0.0 <= meta.metrics[name] <= 1.0, name
    assert meta.metrics["roc_auc"] > 0.85
    assert meta.metrics["pr_auc"] > 0.05  # well above the ~1% fraud rate
    assert meta.metrics["recall"] >= 0.5
    assert meta.metrics["test_rows"] == 1_000.0

    frame = pd.read_csv(small_file)
    assert meta.data.source == "payments.csv"
    assert meta.data.rows == 5_000
    assert meta.data.sha256 == hashlib.sha256(small_file.read_bytes()).hexdigest()
    assert meta.data.fraud_rate == pytest.approx(frame["is_fraud"].mean(), abs=1e-12)

    assert meta.libraries["scikit-learn"] == sklearn.__version__
    assert set(meta.libraries) >= {"scikit-learn", "numpy", "pandas", "joblib"}
    assert meta.params["random_state"] == 0

    assert meta.canary is not None
    assert len(meta.canary.events) == len(meta.canary.probabilities) == CANARY_SIZE
    assert all(0.0 <= p <= 1.0 for p in meta.canary.probabilities)
    ids = set(frame["tx_id"])
    assert all(event["tx_id"] in ids for event in meta.canary.events)


def test_cli_trained_bundle_loads_and_reproduces_its_canary(
    small_bundle: BundleMetadata, runs: dict[str, Run]
) -> None:
    bundle = load_bundle(Path(runs["train-small"].option("--model-dir")), "small")
    assert bundle.metadata == small_bundle
    assert bundle.metadata.canary is not None
    np.testing.assert_allclose(
        bundle.predict_proba(bundle.metadata.canary.events),
        bundle.metadata.canary.probabilities,
        rtol=0,
        atol=1e-6,
    )


def test_cli_trains_on_the_ethereum_data(runs: dict[str, Run]) -> None:
    run = runs["train-ethereum"]
    assert run.returncode == 0, run.stderr
    meta = read_metadata(Path(run.option("--model-dir")) / "eth")

    assert meta.spec.name == "ethereum-transactions"
    assert meta.metrics["roc_auc"] > 0.9, meta.metrics
    assert meta.data.source == "transactions.csv.gz"
    assert meta.data.rows == 71_239
    assert 0.15 < meta.data.fraud_rate < 0.25

    # Canary events are rows of the file: eth-<row>, block time in epoch ms.
    raw = pd.read_csv(ETHEREUM_DATA)
    assert meta.canary is not None
    for event in meta.canary.events[:5]:
        row = raw.iloc[int(event["tx_id"].removeprefix("eth-"))]
        assert event["timestamp"] == int(row["block_timestamp"]) * 1000
        assert event["gas"] == int(row["gas"])
        assert event["value"] == pytest.approx(float(row["value"]))


def assert_one_line_error(run: Run, words: list[str]) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(PROG) and ": error: " in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("name", "words"),
    [("missing-file", ["nope.csv", "no such file"]), ("unknown-subcommand", ["'fit'"])],
)
def test_cli_entry_point_error_is_one_line_and_exit_2(
    runs: dict[str, Run], name: str, words: list[str]
) -> None:
    assert_one_line_error(runs[name], words)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, small_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    frame = pd.read_csv(small_file)

    def write(name: str, changed: pd.DataFrame) -> None:
        changed.to_csv(folder / name, index=False)

    label = frame.copy()
    label.loc[17, "is_fraud"] = 2
    write("label-2.csv", label)
    blank = frame.astype({"is_fraud": "Int64"})
    blank.loc[11, "is_fraud"] = pd.NA
    write("label-blank.csv", blank)
    write("single-class.csv", frame.assign(is_fraud=0))
    few = frame.assign(is_fraud=0)
    few.loc[:4, "is_fraud"] = 1
    write("few-fraud.csv", few)
    text = frame.astype({"amount_usd": object})
    text.loc[3, "amount_usd"] = "lots"
    write("text.csv", text)
    out_of_range = frame.copy()
    out_of_range.loc[7, "address_age_days"] = 40_000
    write("range.csv", out_of_range)
    write("payments.csv", frame)
    (folder / "payments.txt").write_text(small_file.read_text())
    (folder / "empty.csv").write_text("")
    (folder / "broken.parquet").write_bytes(b"not parquet")
    (folder / "latin1.toml").write_bytes(
        b'name = "caf\xe9"\nlabel_field = "is_fraud"\n[numeric.amount_usd]\n'
    )
    return folder


BAD_RUNS: list[tuple[str, list[str], list[str]]] = [
    # (id, arguments with {d} the folder of bad files, words the error must hold)
    ("missing-file", ["train", "--data", "{d}/nope.csv"], ["nope.csv", "no such file"]),
    ("txt-suffix", ["train", "--data", "{d}/payments.txt"], ["payments.txt", ".csv"]),
    (
        "empty-file",
        ["train", "--data", "{d}/empty.csv"],
        ["empty.csv", "cannot be read"],
    ),
    ("broken-parquet", ["train", "--data", "{d}/broken.parquet"], ["cannot be read"]),
    (
        "wrong-columns",
        ["train", "--data", "{d}/payments.csv", "--spec", "ethereum"],
        ["columns", "'class'", "ethereum-transactions", "--spec"],
    ),
    (
        "label-not-0-1",
        ["train", "--data", "{d}/label-2.csv"],
        ["is_fraud", "0 or 1", "'2'"],
    ),
    (
        "label-blank",
        ["train", "--data", "{d}/label-blank.csv"],
        ["is_fraud", "1 blanks"],
    ),
    ("single-class", ["train", "--data", "{d}/single-class.csv"], ["single class (0)"]),
    ("few-of-a-class", ["train", "--data", "{d}/few-fraud.csv"], ["only 5 rows", "10"]),
    (
        "text-in-numeric",
        ["train", "--data", "{d}/text.csv"],
        ["numeric column", "'lots'"],
    ),
    (
        "out-of-range",
        ["train", "--data", "{d}/range.csv"],
        ["address_age_days", "outside [0, 36500]", "row 7", "40000"],
    ),
    (
        "missing-spec",
        ["train", "--data", "{d}/payments.csv", "--spec", "{d}/none.toml"],
        ["--spec", "none.toml", "cannot read"],
    ),
    (
        "rows-0",
        ["generate", "--rows", "0", "--out", "{d}/x.csv"],
        ["--rows", "at least 1"],
    ),
    (
        "rows-text",
        ["generate", "--rows", "many", "--out", "{d}/x.csv"],
        ["--rows", "'many'"],
    ),
    (
        "generate-bad-suffix",
        ["generate", "--rows", "5", "--out", "{d}/x.txt"],
        ["--out", ".csv or .parquet"],
    ),
    (
        "target-recall-2",
        ["train", "--data", "{d}/payments.csv", "--target-recall", "2"],
        ["--target-recall", "between 0 and 1", "got 2"],
    ),
    (
        "target-recall-0",
        ["train", "--data", "{d}/payments.csv", "--target-recall", "0"],
        ["--target-recall", "got 0"],
    ),
    (
        "test-size-1",
        ["train", "--data", "{d}/payments.csv", "--test-size", "1"],
        ["--test-size"],
    ),
    (
        "seed-negative",
        ["train", "--data", "{d}/payments.csv", "--seed", "-1"],
        ["--seed", "-1"],
    ),
    (
        "unknown-subcommand",
        ["fit", "--data", "{d}/payments.csv"],
        ["invalid choice", "'fit'"],
    ),
    ("no-subcommand", [], ["required", "COMMAND"]),
    ("missing-data-flag", ["train"], ["--data", "required"]),
]


def _argv(template: list[str], folder: Path, name: str) -> list[str]:
    argv = [a.format(d=folder) for a in template]
    if argv[:1] == ["train"]:
        argv += ["--model-dir", str(folder / f"models-{name}"), *quick_train_flags()]
    return argv


@pytest.mark.parametrize(
    ("name", "template", "words"), BAD_RUNS, ids=[name for name, _, _ in BAD_RUNS]
)
def test_cli_bad_input_is_one_error_line_and_exit_2(
    bad_files: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    template: list[str],
    words: list[str],
) -> None:
    run = run_in_process(_argv(template, bad_files, name), capsys)
    assert_one_line_error(run, words)
    if "--model-dir" in run.argv:  # nothing half-written
        assert not Path(run.option("--model-dir")).exists()


NAME_AND_ENCODING_RUNS: list[tuple[str, list[str]]] = [
    ("version-with-space", ["train", "--data", "{d}/payments.csv", "--version", "a b"]),
    (
        "version-with-dots",
        ["train", "--data", "{d}/payments.csv", "--version", "../up"],
    ),
    (
        "latin1-spec",
        ["train", "--data", "{d}/payments.csv", "--spec", "{d}/latin1.toml"],
    ),
]


@pytest.mark.parametrize(
    ("name", "template"), NAME_AND_ENCODING_RUNS, ids=[name for name, _ in NAME_AND_ENCODING_RUNS]
)
def test_cli_bad_version_or_spec_encoding_is_one_error_line(
    bad_files: Path, capsys: pytest.CaptureFixture[str], name: str, template: list[str]
) -> None:
    run = run_in_process(_argv(template, bad_files, name), capsys)
    assert_one_line_error(run, ["--"])
