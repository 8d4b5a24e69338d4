import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, RepeatedKFold

from vsp.errors import VspInputError
from vsp.mapping import mappers as mapping
from vsp.mapping.mappers import HITS, ROW_COLUMNS, cosine_ranks, evaluate, run_fold, split_plan, summarise


def _data(n=36, d=6, p=15, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.maximum(0, x @ rng.normal(size=(d, p)) + rng.normal(scale=0.5, size=(n, p))) + 0.01
    return x, y


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _brute_rank(pred, cand, own):
    s_own = _cos(pred, cand[own])
    return 1 + sum(1 for c in range(len(cand)) if c != own and _cos(pred, cand[c]) >= s_own)


def _brute_hits(preds, y, test, candidates):
    hits = {t: 0 for t in HITS}
    for i, c in enumerate(test):
        if candidates == "all":
            r = _brute_rank(preds[i], y, c)
        else:
            r = _brute_rank(preds[i], y[test], i)
        for t in HITS:
            hits[t] += r <= t
    return {t: 100.0 * h / len(test) for t, h in hits.items()}


def _brute_knn(x, y, train, test, k=5):
    out = []
    for i in test:
        sims = [_cos(x[i], x[j]) for j in train]
        order = sorted(range(len(train)), key=lambda a: -sims[a])[:k]
        out.append(np.mean([y[train[a]] for a in order], axis=0))
    return np.array(out)


@pytest.mark.parametrize("candidates", ["all", "test"])
def test_knn_hits_equal_brute_force(candidates):
    x, y = _data()
    for sp in split_plan(len(x), repeats=1, folds=4, seed=1):
        row = run_fold(x, y, "knn", sp.train, sp.test, sp.seed, candidates=candidates)
        expect = _brute_hits(_brute_knn(x, y, sp.train, sp.test), y, sp.test, candidates)
        for t in HITS:
            assert row[f"hit{t}"] == pytest.approx(expect[t])
        assert json.loads(row["params"]) == {"k": 5}


def test_ridge_hits_equal_sklearn_brute_force():
    x, y = _data()
    for sp in split_plan(len(x), repeats=1, folds=4, seed=2):
        row = run_fold(x, y, "ridge", sp.train, sp.test, sp.seed, grid=[{"alpha": 3.0}])
        pred = Ridge(alpha=3.0).fit(x[sp.train], y[sp.train]).predict(x[sp.test])
        expect = _brute_hits(pred, y, sp.test, "all")
        for t in HITS:
            assert row[f"hit{t}"] == pytest.approx(expect[t])


def test_ridge_closed_form_matches_sklearn_for_all_alphas():
    x, y = _data(n=30, d=8)
    preds = mapping.ridge_predict_many(x[:20], y[:20], x[20:], [0.01, 1.0, 100.0])
    for a, p in zip([0.01, 1.0, 100.0], preds, strict=True):
        np.testing.assert_allclose(p, Ridge(alpha=a).fit(x[:20], y[:20]).predict(x[20:]), atol=1e-8)


def test_inner_cv_picks_best_map():
    x, y = _data(n=40)
    sp = split_plan(len(x), repeats=1, folds=5, seed=0)[0]
    alphas = [0.01, 1e4]
    row = run_fold(x, y, "ridge", sp.train, sp.test, sp.seed, grid={"alpha": alphas})
    maps = []
    for a in alphas:
        recip = []
        for itr, ite in KFold(5, shuffle=True, random_state=sp.seed % 2**32).split(sp.train):
            tr, te = sp.train[itr], sp.train[ite]
            pred = Ridge(alpha=a).fit(x[tr], y[tr]).predict(x[te])
            cand = y[sp.train]
            pos = {c: i for i, c in enumerate(sp.train)}
            recip += [1 / _brute_rank(pred[i], cand, pos[c]) for i, c in enumerate(te)]
        maps.append(np.mean(recip))
    assert json.loads(row["params"]) == {"alpha": alphas[int(np.argmax(maps))]}
    assert row["inner_map"] == pytest.approx(max(maps))


def test_cosine_ranks_ties_count_against():
    cand = np.array([[1.0, 0], [2.0, 0], [0, 1.0]])
    assert cosine_ranks(np.array([[1.0, 0]]), cand, np.array([0])).tolist() == [2]
    assert cosine_ranks(np.array([[0, 3.0]]), cand, np.array([2])).tolist() == [1]
    assert mapping.mean_average_precision(np.array([1, 2, 4])) == pytest.approx((1 + 0.5 + 0.25) / 3)


def test_split_plan_is_repeated_kfold():
    plan = split_plan(23, repeats=2, folds=5, seed=7)
    ref = list(RepeatedKFold(n_splits=5, n_repeats=2, random_state=7).split(np.zeros((23, 1))))
    assert len(plan) == 10
    for sp, (tr, te) in zip(plan, ref, strict=True):
        np.testing.assert_array_equal(sp.train, tr)
        np.testing.assert_array_equal(sp.test, te)
    for r in range(2):
        tests = np.concatenate([sp.test for sp in plan if sp.repeat == r])
        assert sorted(tests.tolist()) == list(range(23))
    assert len({sp.seed for sp in plan}) == 10
    with pytest.raises(VspInputError):
        split_plan(3, folds=5)


def test_mlp_cosine_loss_decreases_and_is_seeded():
    x, y = _data(n=40, d=5, p=12)
    hist = []
    a = mapping._mlp_predict_checkpoints(x, y, x[:5], 1e-3, 0.0, [10, 60], seed=1, hidden=64, history=hist)
    assert hist[-1] < 0.5 * hist[0] and hist[-1] < hist[9]
    b = mapping._mlp_predict_checkpoints(x, y, x[:5], 1e-3, 0.0, [10, 60], seed=1, hidden=64)
    np.testing.assert_array_equal(a[60], b[60])
    loss = mapping.cosine_loss
    import torch

    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(loss(t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(-t, t)) == pytest.approx(1.0)


def test_mlp_run_fold_small_grid():
    x, y = _data(n=30, d=4, p=8)
    sp = split_plan(len(x), repeats=1, folds=3, seed=0)[0]
    row = run_fold(
        x, y, "mlp", sp.train, sp.test, sp.seed, grid={"lr": [1e-3], "epochs": [5, 20]}, inner_folds=2
    )
    assert json.loads(row["params"])["epochs"] in (5, 20)
    assert all(0 <= row[f"hit{t}"] <= 100 for t in HITS)


def test_evaluate_rows_and_summary():
    x, y = _data(n=24)
    rows = evaluate(x, y, "knn", embedding="toy", repeats=2, folds=3, seed=0)
    assert len(rows) == 6 and all(set(ROW_COLUMNS) <= set(r) for r in rows)
    assert [(r["repeat"], r["fold"]) for r in rows] == [(r, f) for r in range(2) for f in range(3)]
    s = summarise(rows)[0]
    assert s["n_test"] == 48 and s["embedding"] == "toy" and s["mapper"] == "knn"
    hits = sum(r["hit5"] * r["n_test"] / 100 for r in rows)
    assert s["hit5"] == pytest.approx(100 * hits / 48)
    with pytest.raises(VspInputError, match="unknown mapper"):
        evaluate(x, y, "svm")


def test_inner_folds_are_clamped_to_the_training_concepts_and_recorded():
    # 5 concepts in 5 outer folds: 4 training concepts per fold, fewer than the 5 inner folds asked for
    x, y = _data(n=5)
    rows = evaluate(x, y, "ridge", repeats=1, folds=5, seed=0, grid={"alpha": [0.1, 10.0]}, inner_folds=5)
    assert len(rows) == 5 and [r["inner_folds"] for r in rows] == [4] * 5
    x, y = _data(n=40)
    sp = split_plan(len(x), repeats=1, folds=5, seed=0)[0]
    row = run_fold(x, y, "ridge", sp.train, sp.test, sp.seed, grid={"alpha": [0.1, 10.0]})
    assert row["inner_folds"] == 5
    assert run_fold(x, y, "knn", sp.train, sp.test, sp.seed)["inner_folds"] == 0  # nothing to tune


def test_inner_cv_refuses_one_training_concept_naming_the_numbers():
    x, y = _data(n=4)
    with pytest.raises(VspInputError, match=r"1 training concept.*5 inner folds"):
        run_fold(x, y, "ridge", np.array([0]), np.array([1, 2, 3]), grid={"alpha": [0.1, 10.0]})


def test_one_ridge_solver_for_maps_and_predictions():
    x, y = _data(n=30, d=8)
    coef, b = mapping.fit_ridge(x[:20], y[:20], alpha=1.0)
    (pred,) = mapping.ridge_predict_many(x[:20], y[:20], x[20:], [1.0])
    np.testing.assert_allclose(x[20:] @ coef + b, pred, atol=1e-10)
    solver = mapping.RidgeSVD.fit(x[:20], y[:20])
    assert all(np.array_equal(u, v) for u, v in zip(solver.coef(1.0), (coef, b), strict=True))
    with pytest.raises(VspInputError, match="alpha"):
        mapping.fit_ridge(x, y, alpha=-1.0)


def test_l2_rows_keeps_zero_rows():
    from vsp.linalg import l2_rows

    m = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    out = l2_rows(m)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
