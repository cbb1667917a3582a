"""Synthetic crypto-gateway payments for training and testing the fraud scorer.

Everything here is SYNTHETIC: no row describes a real payment, address or person.
The data models one payment per row as the gateway sees it: a Poisson-like stream
of transactions over 30 days from 2026-01-01 UTC, each with its USD amount, gas
price, the sender's recent activity (`tx_count_24h`), address age and historical
mean value, and the chain, token type and sender country, all with long-tailed
categories and some missing values.

About 1% of rows are fraud. The fraud propensity is built from non-linear effects
and interactions of the fields, so that a tree ensemble can learn it and a linear
model largely cannot:

- a large amount relative to the sender's own average, worse on a young address;
- bursts of activity (tens to a few hundred transactions a day), while the very
  highest counts are exchanges and bots and so are *less* risky;
- a gas price far from the usual one for its chain, in either direction;
- a U-shaped effect of amount: dust-sized card-testing payments and very large
  ones are both riskier than ordinary amounts;
- a few specific (sender country, chain) and (token type, young address)
  combinations;

plus latent noise in the propensity and label noise (unexplained fraud and missed
fraud), which keep even a model that knows the generating process well short of
a perfect ranking.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "tx_id",
    "timestamp",
    "amount_usd",
    "gas_price",
    "tx_count_24h",
    "address_age_days",
    "avg_tx_value",
    "chain",
    "token_type",
    "sender_country",
    "is_fraud",
)

START = pd.Timestamp("2026-01-01T00:00:00Z")
SPAN_DAYS = 30

# Ordered by how common they are: the head of each Zipf-like distribution first.
# fmt: off
CHAINS: tuple[str, ...] = (
    "ethereum", "tron", "bitcoin", "bsc", "polygon", "solana", "arbitrum",
    "base", "optimism", "avalanche", "litecoin", "dogecoin", "ton", "xrp",
    "cardano", "fantom", "cronos", "near", "aptos", "sui", "stellar",
    "algorand", "cosmos", "polkadot", "zksync", "linea", "scroll", "mantle",
    "celo", "gnosis", "moonbeam", "kava", "harmony", "klaytn", "tezos",
    "hedera", "flow", "elrond", "zilliqa", "iotex", "aurora", "metis",
)
TOKEN_TYPES: tuple[str, ...] = (
    "native", "stablecoin", "ERC20", "TRC20", "BEP20", "wrapped", "SPL",
    "NFT", "LP-token", "governance", "meme", "rebasing", "bridged",
    "ERC1155", "synthetic", "yield-bearing", "privacy",
)
COUNTRIES: tuple[str, ...] = (
    "US", "GB", "DE", "IN", "BR", "NG", "TR", "VN", "FR", "JP", "KR", "CA",
    "RU", "UA", "ID", "PH", "AR", "MX", "ES", "IT", "NL", "AU", "PL", "TH",
    "ZA", "KE", "PK", "AE", "SG", "CH", "SE", "CO", "VE", "EG", "MY", "HK",
    "TW", "BE", "AT", "PT", "CZ", "RO", "GR", "IL", "CL", "PE", "BD", "SA",
    "NO", "DK", "FI", "IE", "NZ", "HU", "KZ", "MA", "GH", "UG", "TZ", "CM",
    "SN", "CI", "ET", "DZ", "TN", "LB", "JO", "QA", "KW", "BH", "OM", "LK",
    "NP", "MM", "KH", "LA", "MN", "UZ", "GE", "AM", "AZ", "BY", "MD", "RS",
    "BG", "HR", "SI", "SK", "LT", "LV", "EE", "IS", "LU", "MT", "CY", "PA",
    "CR", "DO", "GT", "EC", "UY", "PY", "BO",
)
# Typical gas price in gwei for the head chains; the tail gets a seeded draw. The
# "unusual gas" effect is relative to these, so a model must learn chain x gas.
_CHAIN_GAS_GWEI: dict[str, float] = {
    "ethereum": 25.0, "tron": 420.0, "bitcoin": 12.0, "bsc": 3.0,
    "polygon": 60.0, "solana": 0.5, "arbitrum": 0.1, "base": 0.05,
}
# Risky (sender country, chain) pairs: mid-tail countries on specific chains,
# none of them risky on its own, so only an interaction captures them.
_RISKY_PAIRS: tuple[tuple[str, str], ...] = (
    ("VE", "tron"), ("KH", "tron"), ("MM", "bsc"), ("NG", "solana"),
    ("UA", "polygon"), ("KZ", "arbitrum"), ("LA", "bitcoin"), ("GH", "base"),
    ("PK", "optimism"), ("AM", "avalanche"), ("MD", "ethereum"), ("TZ", "bsc"),
)
# fmt: on
# Token types that fraud on fresh addresses favours (drained NFTs, rug tokens).
_RISKY_YOUNG_TOKENS: tuple[str, ...] = ("NFT", "meme", "LP-token", "privacy")

# Missing-value rates. Numeric fields come from optional enrichment calls that
# time out now and then; categoricals are missing when a client omits them.
_NUMERIC_MISSING = {
    "amount_usd": 0.025,
    "gas_price": 0.035,
    "tx_count_24h": 0.04,
    "address_age_days": 0.045,
    "avg_tx_value": 0.03,
}
_CATEGORICAL_MISSING = {"chain": 0.01, "token_type": 0.025, "sender_country": 0.03}

# Upper bounds of the gateway feature spec (txrisk/specs/gateway.toml) less a
# margin: generated data must never be rejected by the spec it is trained for.
_MAX_USD = 5e8
_MAX_GAS = 1e6
_MAX_AGE_DAYS = 6000  # no crypto address is older than ~17 years

# Intercept of the fraud logit, tuned so that about 1% of rows end up fraud.
_BASE_LOGIT = -11.8
_NOISE_FRAUD_RATE = 0.0002  # fraud with no trace in the features
_MISSED_FRAUD_RATE = 0.03  # fraud labelled as genuine (chargeback never filed)

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def generate(rows: int, seed: int) -> pd.DataFrame:
    """Return `rows` synthetic gateway payments drawn reproducibly from `seed`.

    The same (rows, seed) always gives an identical frame. Columns are those of
    `COLUMNS`, in that order; see the module docstring for what they model.
    """
    _check_args(rows, seed)
    rng = np.random.default_rng(seed)
    n = rows

    tx_id = _tx_ids(rng, n)
    timestamp = _timestamps(rng, n)

    chain_idx = _zipf_choice(rng, len(CHAINS), n, exponent=1.25, shift=0.6)
    token_idx = _zipf_choice(rng, len(TOKEN_TYPES), n, exponent=1.3, shift=0.8)
    country_idx = _zipf_choice(rng, len(COUNTRIES), n, exponent=1.1, shift=1.5)
    chain = np.asarray(CHAINS, dtype=object)[chain_idx]
    token = np.asarray(TOKEN_TYPES, dtype=object)[token_idx]
    country = np.asarray(COUNTRIES, dtype=object)[country_idx]

    # Address age: a minority of fresh addresses and a long-lived majority.
    fresh = rng.random(n) < 0.2
    age = np.where(
        fresh,
        rng.exponential(12.0, n),
        rng.lognormal(np.log(420.0), 0.9, n),
    )
    age = np.minimum(np.floor(age), _MAX_AGE_DAYS)

    # Sender's historical mean value, and this payment as a multiple of it.
    avg_value = np.minimum(rng.lognormal(np.log(120.0), 1.5, n), _MAX_USD)
    log_ratio = rng.normal(0.0, 0.85, n)
    amount = np.minimum(avg_value * np.exp(log_ratio), _MAX_USD)
    # Dust payments: card testers probing stolen credentials with cents.
    dust = rng.random(n) < 0.02
    amount = np.where(dust, rng.uniform(0.01, 2.0, n), amount)
    amount = np.round(amount, 2)
    avg_value = np.round(avg_value, 2)

    # Activity: most senders are quiet, some burst, a few are exchanges or bots.
    kind = rng.random(n)
    count = np.where(
        kind < 0.93,
        rng.poisson(rng.gamma(1.5, 2.0, n)),
        np.where(
            kind < 0.985,
            rng.lognormal(np.log(70.0), 0.7, n),
            rng.lognormal(np.log(2500.0), 0.8, n),
        ),
    )
    count = np.floor(count)

    # Gas price around a per-chain typical value; the deviation is what matters.
    chain_gas = _chain_gas(rng)[chain_idx]
    gas_dev = rng.normal(0.0, 0.45, n)
    # A few payments bid far off the norm: stuck-cheap or front-running-urgent.
    odd_gas = rng.random(n) < 0.02
    odd_dev = rng.choice([-1.0, 1.0], n) * rng.uniform(1.2, 3.0, n)
    gas_dev = np.where(odd_gas, odd_dev, gas_dev)
    gas = np.minimum(np.round(chain_gas * np.exp(gas_dev), 4), _MAX_GAS)

    logit = _fraud_logit(
        rng,
        amount,
        avg_value,
        age,
        count,
        gas_dev,
        chain_idx,
        token_idx,
        country_idx,
    )
    is_fraud = rng.random(n) < _sigmoid(logit)
    is_fraud |= rng.random(n) < _NOISE_FRAUD_RATE
    is_fraud &= rng.random(n) >= _MISSED_FRAUD_RATE

    frame = pd.DataFrame(
        {
            "tx_id": tx_id,
            "timestamp": timestamp,
            "amount_usd": _with_nan(rng, amount, "amount_usd"),
            "gas_price": _with_nan(rng, gas, "gas_price"),
            "tx_count_24h": _nullable_int(rng, count, "tx_count_24h"),
            "address_age_days": _nullable_int(rng, age, "address_age_days"),
            "avg_tx_value": _with_nan(rng, avg_value, "avg_tx_value"),
            "chain": _with_none(rng, chain, "chain"),
            "token_type": _with_none(rng, token, "token_type"),
            "sender_country": _with_none(rng, country, "sender_country"),
            "is_fraud": is_fraud.astype(np.int64),
        },
        columns=list(COLUMNS),
    )
    logger.debug(
        "generated %d rows (seed %d), fraud rate %.4f",
        n,
        seed,
        float(frame["is_fraud"].mean()),
    )
    return frame


def write_table(frame: pd.DataFrame, path: pathlib.Path) -> None:
    """Write `frame` to `path` as CSV or Parquet, chosen by the file suffix.

    CSV timestamps are written as ISO-8601 with a trailing Z so any reader sees
    them as UTC without guessing a zone.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        out = frame.copy()
        for name in out.columns:
            column = out[name]
            if not pd.api.types.is_datetime64_any_dtype(column.dtype):
                continue
            # Naive timestamps are taken to be UTC already, as generate() makes.
            if isinstance(column.dtype, pd.DatetimeTZDtype):
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            # numpy formats ISO-8601 several times faster than Series.dt.strftime.
            stamps = column.to_numpy("datetime64[us]")
            text = np.char.add(np.datetime_as_string(stamps, unit="us"), "Z")
            text = text.astype(object)
            text[np.isnat(stamps)] = None
            out[name] = text
        out.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"--out must end in .csv or .parquet, got {str(path)!r}")
    logger.info("wrote %d rows to %s", len(frame), path)


def _check_args(rows: int, seed: int) -> None:
    # bool is an int subclass; True rows is surely a mistake, not one row.
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(
            f"rows must be an integer >= 1, got {rows!r}: pass a positive row count"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"seed must be an integer >= 0, got {seed!r}: pass a non-negative seed"
        )


def _tx_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    # A bijective 64-bit mix (splitmix64 finaliser) of row + a seeded offset:
    # ids look random yet can never collide within one frame.
    offset = rng.integers(0, 2**63, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + offset
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    # Format as hex without a Python loop: big-endian bytes -> nibbles -> chars.
    raw = x.astype(">u8").view(np.uint8).reshape(n, 8)
    chars = np.empty((n, 19), dtype=np.uint8)
    chars[:, :3] = np.frombuffer(b"tx-", dtype=np.uint8)
    chars[:, 3::2] = _HEX[raw >> 4]
    chars[:, 4::2] = _HEX[raw & 0x0F]
    return chars.view("S19").ravel().astype(str).astype(object)


def _timestamps(rng: np.random.Generator, n: int) -> pd.Series:
    # Exponential gaps make arrivals Poisson; scaling by the sum of n + 1 gaps
    # keeps the stream inside the 30-day window whatever n is.
    gaps = rng.exponential(1.0, n + 1)
    span_us = SPAN_DAYS * 86_400 * 1_000_000
    offsets_us = np.floor(np.cumsum(gaps)[:n] / gaps.sum() * span_us)
    # Whole microseconds, so a CSV round trip (6 decimals) is exact.
    ns = START.value + offsets_us.astype(np.int64) * 1_000
    index = pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(index, dtype="datetime64[ns, UTC]")


def _zipf_choice(
    rng: np.random.Generator, k: int, n: int, exponent: float, shift: float
) -> np.ndarray:
    # Shifted Zipf: a few dominant categories and a long tail of rare ones.
    weights = 1.0 / (np.arange(k) + 1.0 + shift) ** exponent
    return rng.choice(k, size=n, p=weights / weights.sum())


def _chain_gas(rng: np.random.Generator) -> np.ndarray:
    # Tail chains cluster near one level: a rarely seen chain's normal gas must
    # still be learnable, or "unusual gas" would be noise on most of the tail.
    tail = rng.lognormal(np.log(5.0), 0.6, len(CHAINS))
    return np.array(
        [_CHAIN_GAS_GWEI.get(name, tail[i]) for i, name in enumerate(CHAINS)]
    )


def _fraud_logit(
    rng: np.random.Generator,
    amount: np.ndarray,
    avg_value: np.ndarray,
    age: np.ndarray,
    count: np.ndarray,
    gas_dev: np.ndarray,
    chain_idx: np.ndarray,
    token_idx: np.ndarray,
    country_idx: np.ndarray,
) -> np.ndarray:
    # Computed from the true values before missingness: fraud happened whether
    # or not an enrichment call later failed to report a field.
    n = len(amount)
    log_ratio = np.log((amount + 1.0) / (avg_value + 1.0))
    young = age < 21
    big_jump = _sigmoid((log_ratio - 1.4) * 4.0)
    logit = np.full(n, _BASE_LOGIT)
    # Out-of-pattern amount: mild on its own, severe on a fresh address.
    logit += big_jump * (3.5 + 5.5 * young)
    # Bursts are risky, exchange-scale volumes are not.
    burst = (count >= 25) & (count <= 400)
    logit += 8.0 * burst
    # Gas far from the chain's norm (both too cheap and too urgent).
    logit += 7.5 * _sigmoid((np.abs(gas_dev) - 1.1) * 6.0)
    # U-shaped amount: dust probing and very large payments.
    logit += 7.5 * (amount < 2.0) + 5.5 * _sigmoid((np.log1p(amount) - 9.5) * 2.0)
    # Interactions of categories with each other and with age.
    country_of = {c: i for i, c in enumerate(COUNTRIES)}
    chain_of = {c: i for i, c in enumerate(CHAINS)}
    pair_codes = np.array(
        [country_of[c] * len(CHAINS) + chain_of[h] for c, h in _RISKY_PAIRS]
    )
    risky_pair = np.isin(country_idx * len(CHAINS) + chain_idx, pair_codes)
    logit += 8.0 * risky_pair
    risky_tokens = np.isin(
        token_idx, [TOKEN_TYPES.index(t) for t in _RISKY_YOUNG_TOKENS]
    )
    logit += 5.0 * (risky_tokens & young)
    # Latent noise: what the features cannot explain.
    logit += rng.normal(0.0, 0.4, n)
    return logit


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _missing_mask(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return rng.random(n) < rate


def _with_nan(rng: np.random.Generator, values: np.ndarray, name: str) -> np.ndarray:
    out = values.astype(np.float64)
    out[_missing_mask(rng, len(out), _NUMERIC_MISSING[name])] = np.nan
    return out


def _nullable_int(
    rng: np.random.Generator, values: np.ndarray, name: str
) -> pd.arrays.IntegerArray:
    mask = _missing_mask(rng, len(values), _NUMERIC_MISSING[name])
    return pd.arrays.IntegerArray(values.astype(np.int64), mask)


def _with_none(rng: np.random.Generator, values: np.ndarray, name: str) -> np.ndarray:
    out = values.copy()
    out[_missing_mask(rng, len(out), _CATEGORICAL_MISSING[name])] = None
    return out
