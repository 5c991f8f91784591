"""Ideas for NIWT's rows, each scored on the validation problem of kept runs (no test image).

    .venv/bin/python benchmarks/niwt_ideas.py --runs /tmp/w/seed0 /tmp/w/seed1 [--out FILE]

Each run folder is a finished ``kedro run`` kept by ``benchmarks/seeds.py --keep``.  The
script loads its validation backbone, validation images and reference cache, refits the
mapper the validation chose, and builds the pseudo-unseen rows of the chosen transfer
(without its logit matching) and of each idea; every row set is scored on the
validation problem (pseudo-unseen classes, a backbone that never saw them), H_calibrated at
its own best gamma, as the validation pipeline scores candidates:

* ``chosen transfer``: the chosen ``niwt_tuned`` transfer, no logit matching;
* ``+ logit matching``: the same rows, ``logit_matching: seen_negatives``;
* ``+ seen-variance penalty``: those least squares with ``beta tr(M)/tr(C) w^T C w`` added, C the
  covariance of the seen training features (rows that stay flat on seen images), matched;
* ``least squares, matched``: the closed-form rows (the chosen ``ls_alpha`` and anchor;
  0.01 and the chosen anchor when the chosen transfer is the gradient one), matched;
* ``+ every reference image``: the same on G of every seen trainval image of the
  validation backbone (instead of the configured sample), matched;
* ``+ mapper weight decay 0.1`` / ``+ standardised domain knowledge``: the mapper refitted
  so, same transfer, matched;
* ``+ ridge mapper, alpha a``: the mapper replaced by closed-form ridge from standardised
  domain knowledge to the seen classes' mean unit importance, same transfer, matched;
* ``f-CLSWGAN classifier`` and ``f-CLSWGAN classifier from NIWT rows``: one generator
  (the chosen settings), its final softmax trained from zeros (the baseline) or from the
  seen rows plus the matched NIWT rows.

Prints a markdown table per run and the mean over runs, and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from niwt_pipeline.core.baselines import weight_regression_rows
from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.generative import _feature_scale, fit_generator
from niwt_pipeline.core.gzsl import problem_for
from niwt_pipeline.core.mapper import fit_mapper
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.selection import validation_metrics
from niwt_pipeline.core.transfer import (
    ReferenceConfig,
    gram_moments,
    make_variant,
    match_seen_logits,
    reference_cache,
    variant_rows,
)

KEYS = ("H_calibrated", "ausuc", "zsl_top1")


def _load(run: Path) -> dict:
    os.chdir(run)
    bootstrap_project(run)
    with KedroSession.create(project_path=run) as session:
        context = session.load_context()
        catalog = context.catalog
        names = (
            "validation_image_outputs",
            "validation_roles",
            "validation_reference_cache",
            "validation_backbone",
            "domain_knowledge",
            "images",
            "params:transfer",
            "params:mapping",
            "validation_choice",
        )
        return {name: catalog.load(name) for name in names}


def _least_squares(moments, target, seen, alpha, anchor, penalty=None, beta=0.0):
    """The closed-form rows of ``solver: least_squares`` with an optional quadratic penalty."""
    m, total, scale = moments.moment, moments.total, moments.scale
    dim = m.shape[0]
    ridge = alpha * float(torch.trace(m)) / dim
    a = torch.as_tensor(target, dtype=torch.float64)
    a = a / a.norm(dim=1, keepdim=True)
    system = m + ridge * torch.eye(dim, dtype=torch.float64)
    rhs = scale * total.T @ a.T + ridge * torch.as_tensor(anchor, dtype=torch.float64).T
    if penalty is not None and beta:
        system = system + beta * float(torch.trace(m)) / float(torch.trace(penalty)) * penalty
    return torch.linalg.solve(system, rhs).T.numpy()


def _ridge_map(dk_seen, means, dk_new, alpha):
    """Closed-form ridge from standardised domain knowledge to the seen classes' mean unit
    importance, with an unpenalised intercept; the new classes' predicted importance."""
    mu, sd = dk_seen.mean(0), dk_seen.std(0) + 1e-8
    x = (dk_seen - mu) / sd
    b = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (means - means.mean(0)))
    return ((dk_new - mu) / sd) @ b + means.mean(0)


def _softmax_rows(x, y, n_real, class_ids, config, init=None):
    """f-CLSWGAN's final softmax (Adam, the configured epochs and batches) from zeros or
    from ``init`` (rows, biases), on features scaled by the first ``n_real`` (the real
    ones); rows returned in raw units."""
    scale = _feature_scale(x[:n_real], config.normalise_features)
    position = {int(c): j for j, c in enumerate(class_ids)}
    xt = torch.from_numpy(x / scale).float()
    yt = torch.tensor([position[int(c)] for c in y])
    weight = torch.zeros(len(class_ids), x.shape[1])
    bias = torch.zeros(len(class_ids))
    if init is not None:
        weight = torch.from_numpy(init[0] * scale).float()
        bias = torch.from_numpy(init[1]).float()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimiser = torch.optim.Adam(
        [weight, bias], lr=config.classifier_lr, betas=(config.beta1, 0.999)
    )
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.classifier_epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), config.classifier_batch_size):
            index = order[start : start + config.classifier_batch_size]
            loss = F.cross_entropy(xt[index] @ weight.T + bias, yt[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return ClassRows(
        "fclswgan",
        class_ids,
        weight.detach().double().numpy() / scale,
        bias.detach().double().numpy(),
    )


def ideas(run: Path) -> dict[str, dict[str, float]]:
    """Validation metrics of every idea on one kept run."""
    loaded = _load(run)
    outputs, roles = loaded["validation_image_outputs"], loaded["validation_roles"]
    cache, backbone = loaded["validation_reference_cache"], loaded["validation_backbone"]
    transfer, mapping = loaded["params:transfer"], loaded["params:mapping"]
    choice = loaded["validation_choice"]
    dk = domain_knowledge_by_class(loaded["domain_knowledge"]).to_numpy(np.float64)
    seen = backbone.seen_rows()
    table = roles.set_index("image_id").loc[outputs["image_id"].numpy()]
    role, labels = table["role"].to_numpy(), table["class_id"].to_numpy(dtype=np.int64)
    pseudo = np.unique(labels[role == "pseudo_unseen"])
    features = outputs["features"].numpy().astype(np.float64)
    importance = outputs["importance_gt"].numpy()
    train = role == "train"
    evaluate = np.isin(role, ("holdout", "pseudo_unseen"))
    all_ids = np.union1d(seen.class_ids, pseudo)
    problem = problem_for(labels[evaluate], all_ids, pseudo)
    xtr, ytr = features[train], labels[train]

    def score(rows: ClassRows, with_seen: bool = True) -> dict[str, float]:
        scores = ((seen + rows) if with_seen else rows).scores(features[evaluate], all_ids)
        return {k: 100 * v for k, v in validation_metrics(scores, problem).items() if k in KEYS}

    def matched(rows: ClassRows) -> ClassRows:
        return match_seen_logits(rows, seen, xtr, ytr)

    def target(**overrides) -> np.ndarray:
        config = replace(mapping.mapper, **{**choice["mapper"], **overrides})
        fitted, _ = fit_mapper(dk, importance[train], labels[train], seen.class_ids, config)
        return fitted.predict(dk[pseudo]).numpy()

    ridge = weight_regression_rows(seen, dk, pseudo, choice["baselines"]["ridge_alpha"])
    overrides = {k: v for k, v in choice["niwt_tuned"].items() if k != "logit_matching"}
    variant = make_variant(replace(transfer.niwt, progress=False), overrides)
    moments = gram_moments([cache.gram], seen.weight)

    def rows_for(goal: np.ndarray) -> ClassRows:
        rows, _ = variant_rows("niwt", goal, pseudo, seen, variant, cache, backbone, ridge, moments)
        return rows

    chosen_target = target()
    plain = rows_for(chosen_target)
    out = {
        "chosen transfer": score(plain),
        "+ logit matching": score(matched(plain)),
    }
    # least squares with the seen-variance penalty, and on every reference image
    ls = variant.config
    alpha = ls.ls_alpha if ls.solver == "least_squares" else 1e-2
    anchor = (
        ridge.rows_for(pseudo)[0]
        if variant.anchor == "ridge"
        else np.broadcast_to(seen.weight.mean(0), (len(pseudo), seen.dim))
    )
    centred = torch.as_tensor(xtr - xtr.mean(0))
    covariance = centred.T @ centred / len(centred)

    def ls_rows(weight: np.ndarray) -> ClassRows:
        bias = np.full(len(pseudo), float(seen.bias.mean()))
        return ClassRows("niwt", pseudo, weight.astype(np.float32), bias.astype(np.float32))

    base_ls = ls_rows(_least_squares(moments, chosen_target, seen, alpha, anchor))
    out["least squares, matched"] = score(matched(base_ls))
    out["+ seen-variance penalty 0.1"] = score(
        matched(
            ls_rows(_least_squares(moments, chosen_target, seen, alpha, anchor, covariance, 0.1))
        )
    )
    every = reference_cache(
        backbone,
        loaded["images"],
        ReferenceConfig(max_images=None, seed=0, gram_memory_budget_mb=4096),
    )
    every_moments = gram_moments([every.gram], seen.weight)
    out["+ every reference image"] = score(
        matched(ls_rows(_least_squares(every_moments, chosen_target, seen, alpha, anchor)))
    )
    out["+ mapper weight decay 0.1"] = score(matched(rows_for(target(weight_decay=0.1))))
    out["+ standardised domain knowledge"] = score(
        matched(rows_for(target(standardise_inputs=True)))
    )
    unit = importance[train] / np.linalg.norm(importance[train], axis=1, keepdims=True)
    means = np.stack([unit[labels[train] == c].mean(0) for c in seen.class_ids])
    for alpha in (1.0, 10.0, 100.0):
        out[f"+ ridge mapper, alpha {alpha:g}"] = score(
            matched(rows_for(_ridge_map(dk[seen.class_ids], means, dk[pseudo], alpha)))
        )
    # f-CLSWGAN's final classifier, from zeros or from the NIWT rows
    config = replace(transfer.fclswgan, n_synthetic=choice["baselines"]["fclswgan_n_synthetic"])
    position = {int(c): j for j, c in enumerate(seen.class_ids)}
    generator = fit_generator(
        xtr, np.array([position[int(c)] for c in ytr]), dk[seen.class_ids], config
    )
    synthetic, which = generator.generate(dk[pseudo], config.n_synthetic, seed=config.seed)
    x = np.concatenate([xtr, synthetic])
    y = np.concatenate([ytr, pseudo[which]])
    start = (seen + matched(plain)).rows_for(all_ids)
    out["f-CLSWGAN classifier"] = score(
        _softmax_rows(x, y, len(xtr), all_ids, config), with_seen=False
    )
    out["f-CLSWGAN classifier from NIWT rows"] = score(
        _softmax_rows(x, y, len(xtr), all_ids, config, init=start), with_seen=False
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {str(run): ideas(run.resolve()) for run in args.runs}
    names = list(next(iter(results.values())))
    lines = [
        "Validation problem of each kept run (pseudo-unseen classes, validation backbone); "
        "H_calibrated / AUSUC / ZSL top-1 in percent.",
        "",
        "| idea | "
        + " | ".join(f"`{Path(r).parent.name}/{Path(r).name}`" for r in results)
        + " | mean |",
        "|---|" + "---|" * (len(results) + 1),
    ]
    for name in names:
        cells = [" / ".join(f"{values[name][k]:.1f}" for k in KEYS) for values in results.values()]
        mean = " / ".join(
            f"{np.mean([values[name][k] for values in results.values()]):.1f}" for k in KEYS
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
