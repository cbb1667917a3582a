"""Bad input to `select`, `tune` and `study`: one error line on stderr, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main
from trainer.generate import generate, write_table

REPO = Path(__file__).resolve().parents[2]
ETHEREUM_DATA = REPO / "data" / "ethereum" / "transactions.csv.gz"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    good = generate(600, seed=2)
    out: dict[str, Path] = {}

    def put(name: str, frame: object) -> None:
        out[name] = folder / name
        write_table(frame, out[name])  # type: ignore[arg-type]

    labels = good.copy()
    labels["is_fraud"] = labels["is_fraud"].replace({1: 2})
    put("labels.csv", labels)
    single = good.copy()
    single["is_fraud"] = 0
    put("single.csv", single)
    fraud_row = int(good["is_fraud"].to_numpy().argmax())
    legit_rows = [i for i in range(3) if i != fraud_row][:2]
    put("tiny.csv", good.iloc[sorted([fraud_row, *legit_rows])])
    rare = good.copy()
    rare["is_fraud"] = 0
    rare.loc[rare.index[[5, 300]], "is_fraud"] = 1
    put("rare.csv", rare)
    put("good.csv", good)
    spec = folder / "other.toml"
    spec.write_text(
        'name = "other"\nlabel_field = "is_fraud"\n'
        "[numeric.amount_usd]\n[numeric.fee_usd]\n"
    )
    out["other.toml"] = spec
    return out


def _cases(files: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    return {
        "missing file": (["--data", "/nonexistent/x.csv"], "no such file"),
        "wrong columns": (["--data", str(ETHEREUM_DATA)], "are missing"),
        "label not 0/1": (["--data", str(files["labels.csv"])], "must be 0 or 1"),
        "single class": (["--data", str(files["single.csv"])], "single class"),
        "fewer rows than folds": (["--data", str(files["tiny.csv"])], "only 3 rows"),
        "class rarer than folds": (
            ["--data", str(files["rare.csv"])],
            "only 2 fraud rows, fewer than the folds",
        ),
        "spec not matching": (
            ["--data", str(files["good.csv"]), "--spec", str(files["other.toml"])],
            "fee_usd",
        ),
        "unreadable spec": (
            ["--data", str(files["good.csv"]), "--spec", "/nonexistent.toml"],
            "cannot read it",
        ),
        "bad folds": (["--data", str(files["good.csv"]), "--folds", "1"], "at least 2"),
        "unknown model": (
            ["--data", str(files["good.csv"]), "--models", "svm"],
            "unknown model svm",
        ),
    }


def _run(argv: list[str]) -> int:
    """The exit code, whether the parser exits or the command returns."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("command", ["select", "tune", "study"])
def test_bad_input_is_one_line_and_exit_2(
    command: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ["--model-dir", str(tmp_path / "models")] if command == "study" else []
    for case, (args, expected) in _cases(files).items():
        code = _run(["--log-level", "WARNING", command, *args, *extra])
        err = capsys.readouterr().err
        assert code == 2, (case, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (case, err)
        assert expected in lines[0], (case, lines[0])
        assert "Traceback" not in err
