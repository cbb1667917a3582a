"""Session fixtures: the embedded broker and a small trained model registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.generate import generate, write_table
from trainer.train import TrainOptions, train
from txrisk.broker import EmbeddedBroker
from txrisk.bundle import BundleMetadata
from txrisk.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
ETHEREUM_DATA = REPO / "data" / "ethereum" / "transactions.csv.gz"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole session, on a free loopback port."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as running:
        yield running


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.parquet"
    write_table(generate(20_000, seed=11), path)
    return path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, synthetic_file: Path) -> Path:
    """A registry with one model trained on 20,000 synthetic rows."""
    folder = tmp_path_factory.mktemp("registry")
    train(
        synthetic_file, load_spec("gateway"), folder, TrainOptions(seed=0, version="v1")
    )
    return folder


@pytest.fixture(scope="session")
def model_meta(registry: Path) -> BundleMetadata:
    from txrisk.bundle import read_metadata

    return read_metadata(registry / "v1")
