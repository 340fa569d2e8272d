"""Tree ensembles as plain arrays: evaluated with numpy, saved without pickle.

scikit-learn fits the predictor's forests and boosted trees; this module turns
each fitted ensemble into five flat arrays per tree set (children, split
feature, threshold, leaf value) plus two numbers (a constant and a scale), and
evaluates them itself. That is what makes a predictor file safe to load: it
holds numbers only (`numpy.load(..., allow_pickle=False)`), so a crafted file
can at worst predict nonsense, never run code; and it no longer ties a file to
the scikit-learn version that trained it.

Prediction is scikit-learn's, exactly: features are rounded to float32 first
(as sklearn's trees do) and compared `x <= threshold` to go left.

    random forest:      constant 0,        scale 1 / n_trees,  sum of tree values
    gradient boosting:  constant init_,    scale learning_rate
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Array fields of one ensemble, in the order they are saved.
FIELDS = ("left", "right", "feature", "threshold", "value", "roots")


@dataclass(frozen=True)
class TreeEnsemble:
    """Regression trees concatenated into flat arrays; predicts like the sklearn model."""

    #: Per node: index of the left / right child (-1 at a leaf), all trees concatenated.
    left: np.ndarray
    right: np.ndarray
    #: Per node: feature tested and threshold (x <= threshold goes left).
    feature: np.ndarray
    threshold: np.ndarray
    #: Per node: the tree's output if the node is a leaf.
    value: np.ndarray
    #: Index of each tree's root node.
    roots: np.ndarray
    #: prediction = constant + scale × Σ tree outputs.
    constant: float
    scale: float

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        """Convert a fitted RandomForestRegressor or GradientBoostingRegressor."""
        if hasattr(model, "init_"):  # gradient boosting
            trees = [est.tree_ for est in model.estimators_[:, 0]]
            init = model.init_
            constant = 0.0 if init == "zero" else float(np.ravel(init.constant_)[0])
            scale = float(model.learning_rate)
        else:
            trees = [est.tree_ for est in model.estimators_]
            constant, scale = 0.0, 1.0 / len(trees)
        return cls.from_trees(trees, constant, scale)

    @classmethod
    def from_trees(cls, trees: list[Any], constant: float, scale: float) -> TreeEnsemble:
        """Concatenate sklearn `Tree` objects, renumbering children to global indices."""
        offsets = np.cumsum([0] + [t.node_count for t in trees[:-1]])
        left, right = [], []
        for tree, off in zip(trees, offsets, strict=True):
            for ours, theirs in ((left, tree.children_left), (right, tree.children_right)):
                ours.append(np.where(theirs >= 0, theirs + off, -1))
        return cls(
            left=np.concatenate(left).astype(np.int64),
            right=np.concatenate(right).astype(np.int64),
            feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
            threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
            value=np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64),
            roots=offsets.astype(np.int64),
            constant=constant,
            scale=scale,
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        """One value per row of X (rows × features)."""
        x = np.asarray(X, dtype=np.float32).astype(np.float64)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        active = left[node] >= 0
        while active.any():
            # Leaves point to themselves, so every row × tree steps in one array operation.
            n = node[active]
            r = np.broadcast_to(rows, node.shape)[active]
            go_left = x[r, feature[n]] <= threshold[n]
            node[active] = np.where(go_left, left[n], right[n])
            active = left[node] >= 0
        return self.constant + self.scale * self.value[node].sum(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The array fields by name, for saving."""
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], constant: float, scale: float):
        """Rebuild from saved arrays, checking they describe well-formed trees.

        Raises ValueError naming the problem: a damaged file must fail here, not
        index out of bounds (or loop for ever) at prediction time.
        """
        try:
            fields = {name: np.asarray(arrays[name]) for name in FIELDS}
        except KeyError as exc:
            raise ValueError(f"missing array {exc.args[0]!r}") from None
        for name in ("left", "right", "feature", "roots"):
            if fields[name].dtype.kind != "i":
                raise ValueError(f"{name} must hold integers")
        nodes = len(fields["left"])
        if any(len(fields[n]) != nodes for n in FIELDS[:5]) or not len(fields["roots"]):
            raise ValueError("tree arrays of different lengths, or no tree")
        children = np.concatenate([fields["left"], fields["right"]])
        if children.max(initial=-1) >= nodes or children.min(initial=-1) < -1:
            raise ValueError("a child index outside the tree")
        inner = fields["left"] >= 0
        # Children come after their parent (sklearn numbers nodes depth first), so
        # every walk ends: this rules out cycles without following them.
        index = np.arange(nodes)
        if np.any((fields["left"] <= index) & inner) or np.any((fields["right"] <= index) & inner):
            raise ValueError("a child index not after its parent")
        if np.any(inner != (fields["right"] >= 0)):
            raise ValueError("a node with one child")
        if fields["roots"].min() < 0 or fields["roots"].max() >= nodes:
            raise ValueError("a root index outside the tree")
        if np.any(fields["feature"][inner] < 0):
            raise ValueError("a negative feature index")
        if not (np.isfinite(constant) and np.isfinite(scale)):
            raise ValueError("a non-finite constant or scale")
        return cls(**fields, constant=float(constant), scale=float(scale))

    @property
    def features_used(self) -> int:
        """1 + the largest feature index a split tests (0 if none)."""
        inner = self.left >= 0
        return int(self.feature[inner].max()) + 1 if inner.any() else 0
