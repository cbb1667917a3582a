"""Exact path-dependent TreeSHAP for histogram gradient boosting, batch-vectorised.

Path-dependent TreeSHAP explains the game v(S) = E[f(x) | x_S], where a tree
"knows" a feature in S and averages over the others by its training covers.
For one leaf l that game is a product over the distinct features j on its path:
the leaf value times, per feature, either 1[x satisfies every split on j] when
j is in S, or z_lj (the product of cover ratios of those splits) when it is not.
Shapley values are linear in the game, so the explanation of an event is the
sum over leaves of the Shapley values of these small product games.

Each factor of a leaf's game is 0 or 1 when known, so the Shapley values of a
leaf depend on the event only through which of its path features the event
satisfies: a pattern of at most 2^k cases for k path features. They are
tabulated once per model. Small trees (at most MAX_TREE_SPLITS splits, as the
trainer's default depth-3 trees) are tabulated whole: a tree's Shapley values
depend only on which way the event goes at each of its splits, so one table row
per combination of split outcomes sums its leaves' rows. Explaining a batch is
then a few array operations: evaluate every split for every event, form each
tree's (or each leaf's) pattern, look its row up and add. The result equals the
`shap` library's TreeExplainer to floating-point rounding (a test checks this),
at a fraction of its cost for the shallow trees the trainer uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier

# Leaves with more distinct path features than this would need 2^k table rows
# each; such models go to the shap library instead.
MAX_PATH_FEATURES = 10
# Trees with at most this many splits get one table row per combination of
# split outcomes (1,024 rows at most), which is the fastest way to explain them.
MAX_TREE_SPLITS = 10
# Events per chunk: bounds the (events x leaves x depth) work arrays to a few
# tens of megabytes whatever the batch size.
CHUNK_EVENTS = 1_000


class Unsupported(Exception):
    """The model has a structure this implementation does not handle."""


@dataclass(frozen=True)
class _Leaf:
    value: float
    conditions: list[tuple[int, bool, int]]  # (node id, goes left, path feature slot)
    features: list[int]  # prepared column of each slot
    zero_fractions: list[float]  # cover ratio product of each slot's splits


class LeafTableTreeShap:
    """TreeSHAP values of a fitted binary `HistGradientBoostingClassifier`.

    `project` (columns x outputs) maps per-column values to the caller's units,
    e.g. one-hot columns folded into their field; identity by default.
    """

    def __init__(
        self,
        model: HistGradientBoostingClassifier,
        n_columns: int,
        project: np.ndarray | None = None,
    ) -> None:
        if len(model._predictors) == 0 or len(model._predictors[0]) != 1:
            raise Unsupported("only binary classifiers are supported")

        node_feature: list[int] = []
        node_threshold: list[float] = []
        node_missing_left: list[bool] = []
        leaves: list[_Leaf] = []
        tree_of_leaf: list[int] = []
        for tree, (predictor,) in enumerate(model._predictors):
            nodes = predictor.nodes
            if np.any(nodes["is_categorical"]):
                raise Unsupported("native categorical splits are not supported")
            offset = len(node_feature)
            node_feature.extend(int(f) for f in nodes["feature_idx"])
            node_threshold.extend(float(t) for t in nodes["num_threshold"])
            node_missing_left.extend(bool(m) for m in nodes["missing_go_to_left"])
            found = _leaves(nodes, offset)
            leaves.extend(found)
            tree_of_leaf.extend([tree] * len(found))

        depth = max((len(leaf.conditions) for leaf in leaves), default=1)
        slots = max((len(leaf.features) for leaf in leaves), default=1)
        if slots > MAX_PATH_FEATURES:
            raise Unsupported(f"a leaf has {slots} distinct path features")

        # Only splits are evaluated; leaves carry no condition of their own.
        split_of = {node: i for i, node in enumerate(sorted(_split_nodes(leaves)))}
        split_nodes = np.fromiter(split_of, dtype=np.intp, count=len(split_of))
        self._split_feature = np.asarray(node_feature, dtype=np.intp)[split_nodes]
        self._split_threshold = np.asarray(node_threshold, dtype=np.float64)[
            split_nodes
        ]
        self._split_missing_left = np.asarray(node_missing_left, dtype=bool)[
            split_nodes
        ]

        # Conditions padded to `depth` per leaf; a padding condition has no bit.
        n_leaves = len(leaves)
        self._cond_split = np.zeros((depth, n_leaves), dtype=np.intp)
        self._cond_left = np.zeros((depth, n_leaves), dtype=bool)
        self._cond_bit = np.zeros((depth, n_leaves), dtype=np.int32)
        self._full_bits = np.zeros(n_leaves, dtype=np.int32)
        self._starts = np.zeros(n_leaves, dtype=np.int32)

        tables: list[np.ndarray] = []
        rows = 0
        expected = float(np.ravel(model._baseline_prediction)[0])
        outputs = n_columns if project is None else project.shape[1]
        for index, leaf in enumerate(leaves):
            for c, (node, left, slot) in enumerate(leaf.conditions):
                self._cond_split[c, index] = split_of[node]
                self._cond_left[c, index] = left
                self._cond_bit[c, index] = 1 << slot
            self._full_bits[index] = (1 << len(leaf.features)) - 1
            self._starts[index] = rows

            # Per pattern, the leaf's Shapley values placed in its columns.
            table = _leaf_table(leaf.value, leaf.zero_fractions)
            placed = np.zeros((len(table), n_columns), dtype=np.float64)
            placed[:, leaf.features] = table
            tables.append(placed if project is None else placed @ project)
            rows += len(table)
            expected += leaf.value * math.prod(leaf.zero_fractions)

        self._table = np.concatenate(tables) if tables else np.zeros((1, outputs))
        self.expected_value = expected
        self._tree_mode = False
        self._tabulate_trees(leaves, tree_of_leaf, split_of, tables)

    def _tabulate_trees(
        self,
        leaves: list[_Leaf],
        tree_of_leaf: list[int],
        split_of: dict[int, int],
        leaf_tables: list[np.ndarray],
    ) -> None:
        """Whole-tree tables, when every tree is small enough."""
        by_tree: dict[int, list[int]] = {}
        for index, tree in enumerate(tree_of_leaf):
            by_tree.setdefault(tree, []).append(index)

        tree_splits: list[list[int]] = []
        for members in by_tree.values():
            splits = sorted(
                {split_of[n] for i in members for n, _, _ in leaves[i].conditions}
            )
            if len(splits) > MAX_TREE_SPLITS:
                return
            tree_splits.append(splits)

        width = max((len(splits) for splits in tree_splits), default=1) or 1
        # Padding slots test column 0 against -inf: never "left", so bit 0.
        self._tree_feature = np.zeros((len(tree_splits), width), dtype=np.intp)
        self._tree_threshold = np.full((len(tree_splits), width), -np.inf)
        self._tree_missing_left = np.zeros((len(tree_splits), width), dtype=bool)
        self._tree_weights = (1 << np.arange(width)).astype(np.int32)
        self._tree_start = np.zeros(len(tree_splits), dtype=np.int32)

        tables = []
        rows = 0
        for t, (members, splits) in enumerate(
            zip(by_tree.values(), tree_splits, strict=True)
        ):
            self._tree_feature[t, : len(splits)] = self._split_feature[splits]
            self._tree_threshold[t, : len(splits)] = self._split_threshold[splits]
            self._tree_missing_left[t, : len(splits)] = self._split_missing_left[splits]
            self._tree_start[t] = rows
            position = {split: bit for bit, split in enumerate(splits)}
            table = np.zeros((1 << len(splits), self._table.shape[1]))
            for outcome in range(1 << len(splits)):
                for i in members:
                    pattern = (1 << len(leaves[i].features)) - 1
                    for node, left, slot in leaves[i].conditions:
                        went_left = (outcome >> position[split_of[node]]) & 1
                        if went_left != left:
                            pattern &= ~(1 << slot)
                    table[outcome] += leaf_tables[i][pattern]
            tables.append(table)
            rows += len(table)

        self._table = np.concatenate(tables)
        self._tree_mode = True

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """Contributions per event (rows of X) and output, in the model's log-odds."""
        X = np.asarray(X, dtype=np.float64)
        parts = [
            self._chunk(X[i : i + CHUNK_EVENTS]) for i in range(0, len(X), CHUNK_EVENTS)
        ]
        if not parts:
            return np.zeros((0, self._table.shape[1]))
        return np.concatenate(parts)

    def _chunk(self, X: np.ndarray) -> np.ndarray:
        if self._tree_mode:
            return self._sum_rows(self._tree_patterns(X) + self._tree_start)

        # 1. every split of every tree, for every event
        values = X[:, self._split_feature]
        go_left = values <= self._split_threshold
        missing = np.isnan(values)
        if missing.any():
            go_left = np.where(missing, self._split_missing_left, go_left)

        # 2. each leaf's pattern: the path features whose splits the event meets
        pattern = np.broadcast_to(
            self._full_bits, (len(X), len(self._full_bits))
        ).copy()
        for split, left, bit in zip(
            self._cond_split, self._cond_left, self._cond_bit, strict=True
        ):
            broken = go_left[:, split] != left
            pattern &= ~(broken * bit)

        return self._sum_rows(pattern + self._starts)

    def _tree_patterns(self, X: np.ndarray) -> np.ndarray:
        """1-2. each tree's pattern: the event's direction at each of its splits."""
        values = X[:, self._tree_feature]
        go_left = values <= self._tree_threshold
        missing = np.isnan(values)
        if missing.any():
            go_left = np.where(missing, self._tree_missing_left, go_left)

        if go_left.shape[2] <= 8:
            # One byte per tree holds its directions: packbits is the cheap sum.
            packed = np.packbits(go_left, axis=2, bitorder="little")
            return packed[:, :, 0].astype(np.int32)
        return (go_left * self._tree_weights).sum(axis=2, dtype=np.int32)

    def _sum_rows(self, rows: np.ndarray) -> np.ndarray:
        """3. per event, the sum of the table rows picked: a sparse 0/1 product."""
        picks = sparse.csr_matrix(
            (
                np.ones(rows.size, dtype=np.float64),
                rows.ravel(),
                np.arange(0, rows.size + 1, rows.shape[1]),
            ),
            shape=(len(rows), len(self._table)),
        )
        return np.asarray(picks @ self._table)


def _split_nodes(leaves: list[_Leaf]) -> set[int]:
    return {node for leaf in leaves for node, _, _ in leaf.conditions}


def _leaves(nodes: np.ndarray, offset: int) -> list[_Leaf]:
    """Every leaf of one tree with its path, merged by feature."""
    found: list[_Leaf] = []
    stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if nodes["is_leaf"][node]:
            found.append(_leaf(nodes, offset, float(nodes["value"][node]), path))
            continue
        stack.append((int(nodes["left"][node]), [*path, (node, True)]))
        stack.append((int(nodes["right"][node]), [*path, (node, False)]))
    return found


def _leaf(
    nodes: np.ndarray, offset: int, value: float, path: list[tuple[int, bool]]
) -> _Leaf:
    slot_of: dict[int, int] = {}
    zero_fractions: list[float] = []
    conditions = []
    for node, left in path:
        feature = int(nodes["feature_idx"][node])
        child = nodes["left"][node] if left else nodes["right"][node]
        ratio = float(nodes["count"][child]) / float(nodes["count"][node])
        if feature not in slot_of:
            slot_of[feature] = len(zero_fractions)
            zero_fractions.append(1.0)
        zero_fractions[slot_of[feature]] *= ratio
        conditions.append((offset + node, left, slot_of[feature]))
    return _Leaf(
        value=value,
        conditions=conditions,
        features=list(slot_of),
        zero_fractions=zero_fractions,
    )


def _leaf_table(value: float, zero_fractions: list[float]) -> np.ndarray:
    """Shapley values of the leaf's product game for every pattern of its features.

    Row b holds, for each path feature i, the Shapley value when the event
    satisfies exactly the features whose bit is set in b.
    """
    k = len(zero_fractions)
    weights = [
        math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
        for s in range(k)
    ]
    table = np.zeros((1 << k, k), dtype=np.float64)

    for pattern in range(1 << k):
        known = [(pattern >> j) & 1 for j in range(k)]
        for i in range(k):
            # Coefficients of prod over j != i of (z_j + a_j t): the t^s term
            # sums the products over coalitions S of size s.
            poly = [1.0]
            for j in range(k):
                if j == i:
                    continue
                nxt = [0.0] * (len(poly) + 1)
                for s, coefficient in enumerate(poly):
                    nxt[s] += coefficient * zero_fractions[j]
                    nxt[s + 1] += coefficient * known[j]
                poly = nxt
            total = sum(weights[s] * poly[s] for s in range(len(poly)))
            table[pattern, i] = value * (known[i] - zero_fractions[i]) * total
    return table
