"""``fit``: train an HJ transport map between two sample sets in one call."""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from . import registry
from .checks import check_folder_path, real_number, whole_number
from .contracts import json_safe
from .costs import Cost, cost_spec
from .hjmap import (
    PIPELINE_INDEX_FILE,
    WEIGHTS_NAME,
    HJMap,
    as_sample_tensor,
    dense_tensor,
    head_cost_mismatch,
)
from .objective import HJObjective, ObjectiveConfig
from .sampling import CollocationSampler
from .training import TrainConfig, check_accelerator, make_accelerator, train


def check_samples(x: Any, name: str, dim: int | None = None) -> torch.Tensor:
    """Validate one sample set: a finite (n, d) float tensor with n >= 2 (detached: an
    encoder's output may still carry its graph)."""
    given = as_sample_tensor(x, name).detach()  # real numbers: floats or integers of any width
    try:
        x = given.cpu().float()  # training moves its batches to the accelerator's device
        if x.is_inference():  # made under torch.inference_mode(): autograd cannot save it
            with torch.inference_mode(False):
                x = x.clone()
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must hold real numbers that convert to float32, got dtype "
                         f"{x.dtype}.") from None
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(x.shape)}.")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}.")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has zero features.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"Source and target must have the same dimension: got {dim} and {x.shape[1]} ({name})."
        )
    if given.dtype in (torch.float64, torch.int64):
        _check_float32_resolves(given, name)
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        raise ValueError(
            f"{name} contains NaN or Inf in {int(bad.sum())} of {len(x)} rows "
            f"(first at row {int(bad.nonzero()[0])}); clean or drop them first."
        )
    return x


#: p-norm costs with an exponent below this were measured not to train (the map stays near the
#: identity: p = 1.0001, 1.01, 1.1); p = 1.15 did
MIN_TRAINABLE_P = 1.15


def common_spread(z: torch.Tensor) -> float:
    """The root mean square deviation per coordinate of samples ``(n, d)``, in float64: the
    one scale :func:`standardise` divides every column by."""
    z = z.double()  # squares of data at 1e18 overflow float32
    return float(((z - z.mean(0)) ** 2).sum(1).mean().sqrt()) / z.shape[1] ** 0.5


def _check_float32_resolves(x: torch.Tensor, name: str) -> None:
    """The map computes in float32: samples given wider (float64, int64) must fit its range, and
    rounding them to float32 must not blur them at the scale the map standardises them to (one
    spread for all columns): 1e8 + N(0, 1) is a constant in float32, which trained an identity.
    Refused where the rounding reaches a tenth of that spread, warned of from a thousandth."""
    wide = x.double()
    if not torch.isfinite(wide).all():
        return  # said with the row by check_samples
    top = float(wide.abs().max())
    if top > torch.finfo(torch.float32).max:
        raise ValueError(f"{name} holds values up to {top:.3g}, beyond float32's range (3.4e38), "
                         "in which the map computes: rescale the data (and the map's outputs back).")
    scale = common_spread(wide)
    blur = float((wide - wide.float().double()).abs().max())
    if scale == 0 or blur <= 1e-3 * scale:
        return
    advice = (f"the map computes in float32, which rounds {name} by up to {blur:.3g} against a "
              f"spread of {scale:.3g}. Subtract a common offset in "
              f"{str(x.dtype).replace('torch.', '')} first (the same from source and target, e.g. "
              "the source's mean) and add it back to the map's outputs.")
    if blur > 0.1 * scale:
        raise ValueError(f"{name}'s spread is lost in its offset: {advice}")
    warnings.warn(f"{name} is blurred by its offset: {advice}", stacklevel=4)


def check_labels(k: Any, n: int, name: str) -> torch.Tensor:
    try:
        k = dense_tensor(k)
    except (TypeError, ValueError, RuntimeError, KeyError):
        raise ValueError(f"{name} must be integer class labels 0..K-1 (a 1-D tensor, array or "
                         f"list), got {type(k).__name__}.") from None
    if k.ndim != 1 or len(k) != n:
        raise ValueError(f"{name} must be a 1-D tensor of {n} class labels, got shape {tuple(k.shape)}.")
    if k.is_floating_point() and not torch.equal(k, k.round()):
        raise ValueError(f"{name} must hold integer class labels.")
    k = k.long().cpu()
    if (k < 0).any():
        raise ValueError(f"{name} holds negative class labels; use 0..K-1.")
    return k


#: above this many dimensions the quadratic cost's default quadratic part is ``hopf_lax_basis``
SPD_MAX_DIM = 64


def default_head_kwargs(dim: int, cost_name: str = "quadratic", t_f: float = 1.0) -> dict[str, Any]:
    """Head settings of :func:`fit`. For the quadratic cost the quadratic part of the potential
    is the exact Hopf-Lax solution (zero HJ residual by construction); for other costs it is
    the affine-in-time quadratic the network corrects."""
    width = 64 if dim <= 4 else 128 if dim <= 16 else 256
    quadratic: bool | str = "hopf_lax_spd" if cost_name == "quadratic" else True
    kwargs = {"width": width, "depth": 3, "activation": "silu", "quadratic": quadratic,
              "t_max": float(t_f)}
    if cost_name == "quadratic" and dim > SPD_MAX_DIM:
        # hopf_lax_spd solves a d x d system per collocation point: 11 GB and 77 s a step at
        # d = 1,000, out of memory at 2,000. The eigenbasis part solves one; at gain 1 it was
        # also the more accurate on correlated Gaussians (L2-UVP after 200 steps at d = 128:
        # 0.51 % against 1.37 %, in a third of the time; BENCHMARKS.md, high dimensions).
        kwargs.update(quadratic="hopf_lax_basis", quadratic_gain=1.0)
    if dim <= 2 and cost_name == "quadratic":
        # Random Fourier features let the map turn sharply where the target's support is split
        # (all four 2-D pairs of BENCHMARKS.md: energy 1.1-2.7x its floor instead of 2.6-7.1x).
        # Scale 16 matched tighter still but made the maps measurably less optimal. Not for
        # p-norm costs: with p = 3 their wiggles, amplified by grad H, made the maps costlier
        # than exact OT by 21 % (BENCHMARKS.md, p-norm table).
        kwargs.update(fourier_features=128, fourier_scale=8.0)
    return kwargs


def fit(
    x_source: Any,
    y_target: Any,
    cost: str | Cost = "quadratic",
    labels: tuple[Any, Any] | None = None,
    *,
    head: str | None = None,
    head_kwargs: dict[str, Any] | None = None,
    conditional: bool = False,
    t_f: float = 1.0,
    steps: int = 3000,
    time_budget: float | None = None,
    batch_size: int = 512,
    lr: float = 1e-3,
    lambda_mmd: float | str = "auto",
    lambda_slack: float = 0.05,
    mmd: str = "energy",
    mmd_options: dict[str, Any] | None = None,
    backward_mmd: bool = True,
    monotone_weight: float = 0.0,
    monotone_directions: str = "random",
    cycle_weight: float = 1.0,
    cycle_share: float = 1.0,
    semidual_weight: float = 0.0,
    semidual_side: str = "source",
    match_pool: int = 0,
    manifold_weight: float = 0.0,
    manifold_samples: int = 16,
    manifold_gradient: str = "through",
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sampler: CollocationSampler | None = None,
    n_colloc: int | None = None,
    seed: int = 0,
    warm_start: bool = True,
    init_from: str | Path | HJMap | None = None,
    ema_decay: float | None = None,
    output_dir: str | None = None,
    resume: bool = False,
    progress: bool = False,
    accelerator: Any = None,
    class_names: list | None = None,
    target_class_names: list | None = None,
    encoder: dict | None = None,
    return_history: bool = False,
    on_start: Callable[[], None] | None = None,
) -> HJMap | tuple[HJMap, dict[str, Any]]:
    """Learn the optimal transport map from samples ``x_source`` (n, d) to ``y_target`` (m, d).

    ``cost``: a registered cost name or a :class:`Cost` (``hjt.get_cost("pnorm", p=3)``).
    ``head``: a registered head (default ``"mlp"``, ``"conditional"`` with
    ``conditional=True``); ``head_kwargs`` override fit's defaults for it
    (:func:`default_head_kwargs`: width, depth, the quadratic part; naming a ``quadratic`` part
    keeps that part's own ``quadratic_gain`` unless given, while fit's eigenbasis default above
    64 dimensions comes with gain 1). ``steps`` of ``batch_size`` samples a side at learning
    rate ``lr`` (Adam, cosine decay), stopping early after ``time_budget`` seconds;
    ``n_colloc`` HJ collocation points a step (default: as many as a batch, capped at the larger
    of the data's size and 4,096),
    drawn by ``sampler``; ``seed`` seeds the weights and batches; ``ema_decay`` keeps an
    exponential moving average of the weights and returns it (e.g. 0.999; None = off).
    ``progress`` shows a progress bar; ``accelerator`` an ``accelerate.Accelerator`` to train
    through (default: one made for this machine, CPU processes under ``accelerate launch``).
    ``class_names``, ``target_class_names`` and ``encoder`` (a JSON-able record of how the
    samples were encoded) are saved with the map. ``return_history=True`` returns ``(map,
    info)``, ``info`` holding ``steps``, ``seconds``, ``final`` (the last step's losses),
    ``history``, ``num_processes`` and ``ranks_in_sync``.
    ``t_f``: the time horizon of the characteristics; for the built-in (homogeneous) costs the
    optimal map does not depend on it, and the defaults are tuned at 1 (far from it is warned of).
    ``labels=(ls, lt)`` makes the transport class-conditional: class ``k`` goes to class ``k``;
    by default with one shared potential and class-wise MMD (the paper), or with a conditional
    head (``conditional=True``). ``lambda_mmd="auto"`` adapts the MMD weight (see objective.py)
    until the batch's match is within ``1 + lambda_slack`` of its statistical floor; a smaller
    slack asks for a closer match (the excess it lets through is ``lambda_slack`` times the
    floor of one batch).
    ``mmd``: the match between pushed and target samples, ``"energy"`` (the paper),
    ``"gaussian"`` (multi-bandwidth kernel) or ``"sinkhorn"`` (debiased Sinkhorn divergence:
    sharper, about 4x slower per step in 2-D); ``mmd_options`` go to the match, e.g.
    ``{"blur": 0.05}`` (Sinkhorn blur per unit of ``sqrt(2 d)``). ``monotone_weight``
    penalises directions where the forward map folds over (for the quadratic cost its Jacobian
    ``I + t_f Hess u`` not positive; for any cost it times ``D^2H(p)``, see
    :func:`~hjtranslate.losses.cost_monotone_matrix`): with the Sinkhorn match, 10 brings the
    2-D checkerboard and circles maps back to optimal, not the spirals or swissroll ones
    (BENCHMARKS.md).
    ``monotone_directions``: ``"random"`` (one direction per sample), ``"all"`` (every
    eigenvalue of the Jacobian; ``d`` extra backward passes, for low ``d``) or ``"power"`` (the
    least monotone direction by power iterations; for high ``d``).
    ``cycle_weight``: weight of the round-trip term ``|T^-1(T(x)) - x|^2`` (and the other way),
    which keeps the backward map the forward map's inverse; ``cycle_share`` of each batch pays it.
    ``semidual_weight``: weight of the batch semi-dual (the certified dual of
    :func:`~hjtranslate.metrics.certified_dual`, maximised; 0 = off), which pulls ``u(., 0)``
    toward an optimal Kantorovich potential and weighs misplaced mass linearly;
    ``semidual_side="target"`` certifies ``u(., t_f)``, the backward map's potential, instead,
    and ``"both"`` takes their mean.
    ``match_pool``: samples of earlier batches the match also compares against (energy or
    Gaussian match), so that it resolves the target ``(match_pool + batch_size) / batch_size``
    times finer than one batch can (BENCHMARKS.md, 2-D pairs); 0 = the batch alone.
    ``manifold_weight`` (with ``projection``, a differentiable map of data points such as a
    VAE's ``round_trip``, encode after decode): penalises mapped points that the projection
    moves further than it moves the real points on their side, on ``manifold_samples`` points
    per direction and step; it keeps translations where a decoder was trained (0 = off).
    ``manifold_gradient="toward"`` pulls each point toward its projection held fixed instead
    of differentiating through the projection.
    ``warm_start``: for a head with a ``hopf_lax_spd`` or ``hopf_lax_basis`` quadratic part (the
    quadratic cost's default, the second above 64 dimensions), start from the OT map between
    Gaussians fitted to both sample sets (with ``hopf_lax_per_class``, one per class; see
    :func:`linear_warm_start`); training then learns the rest.
    ``init_from``: fine-tune a trained map (an :class:`HJMap`, a folder or a Hub id) instead of
    starting afresh: its architecture, weights and normalisation carry over (no warm start);
    cost, ``t_f``, dimension and classes must match the data and arguments. A smaller ``lr``
    (e.g. 3e-4) keeps the first steps from undoing what it learnt.
    ``output_dir``: checkpoints go to ``output_dir/checkpoints`` (four times a run and every
    10 minutes, atomically);
    ``resume=True`` continues from the last of them: the weights, optimiser, step count,
    adaptive lambda and random state. Pass the same data and the same arguments as the run it
    continues (another cost, ``t_f`` or architecture is refused; the CLI's ``--resume``
    reads the recorded arguments for you).
    ``on_start()`` runs on the main process once every argument is checked, before the first
    step (the CLI writes a run's config.json there, so a rejected option leaves the folder as it was).
    """
    if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
        # fit trains by gradients, also when called under torch.no_grad() or
        # torch.inference_mode(), where encoding the samples often happens (a bare autograd
        # error was all it said); not a wrapper, which would move every warning's location
        given = dict(locals())
        with torch.inference_mode(False), torch.enable_grad():
            return fit(**given)
    xs = check_samples(x_source, "x_source")
    yt = check_samples(y_target, "y_target", dim=xs.shape[1])
    if max(len(xs), len(yt)) <= xs.shape[1]:
        warnings.warn(
            f"x_source and y_target hold {len(xs)} and {len(yt)} samples of {xs.shape[1]} "
            "dimensions, no more samples than dimensions: samples are rows, (n, d). If the "
            "data is (d, n), pass x_source.T and y_target.T.", stacklevel=2)
    t_f = real_number("t_f", t_f)
    steps = whole_number("steps", steps, 1)
    # steps, lr, time_budget and seed checked as training reads them, before any work
    train_config = TrainConfig(
        steps=steps, time_budget=time_budget, lr=lr, seed=seed, output_dir=output_dir,
        resume=resume, progress=progress, checkpoint_every=max(steps // 4, 1) if output_dir else 0,
        ema_decay=ema_decay,
    )
    seed = train_config.seed
    # the match compares sample sets: at least 2 per batch
    batch_size = whole_number("batch_size", batch_size, 2)
    if labels is None and batch_size > min(len(xs), len(yt)):
        warnings.warn(f"batch_size {batch_size} is more than the samples ({len(xs)} and "
                      f"{len(yt)}): each batch draws {min(batch_size, len(xs))} and "
                      f"{min(batch_size, len(yt))} of them (a larger one would only repeat points).",
                      stacklevel=2)
    if n_colloc is not None:
        n_colloc = whole_number("n_colloc", n_colloc, 1)  # collocation points per step
    match_pool = whole_number("match_pool", match_pool, 0)
    if resume and output_dir is None:
        raise ValueError("resume=True continues the run in output_dir: pass output_dir too.")
    if output_dir is not None:
        check_folder_path(Path(output_dir), "output_dir")  # before training, not at a checkpoint
        if on_start is None:  # the CLI checks its own run folders (and writes config.json)
            _check_checkpoint_folder(Path(output_dir))
    if encoder is not None and not (isinstance(encoder, dict) and json_safe(encoder)):
        raise ValueError("encoder must be a dict of JSON values that records how the samples "
                         "were encoded (e.g. {'name': 'vae', 'pretrained': 'models/vae'}), got "
                         f"{type(encoder).__name__}.")
    if conditional and labels is None and init_from is None:
        raise ValueError("conditional=True needs labels=(source_labels, target_labels): the "
                         "head takes the class of each sample.")
    if conditional and head is not None and init_from is None \
            and not getattr(registry.resolve("head", head).obj, "conditional", False):
        raise ValueError(f"conditional=True asks for a head that takes each sample's class, and "
                         f"the {head!r} head does not (one potential for every class): leave head "
                         "unset (the 'conditional' head), or set conditional=False for a shared "
                         "potential with a class-wise match.")
    if accelerator is not None:
        check_accelerator(accelerator, stacklevel=3)  # before any work: the caller's settings
    dim = xs.shape[1]
    cost_name, cost_kwargs = cost_spec(cost)
    built = registry.create("cost", cost_name, **cost_kwargs)  # fail early on unknown names
    if not 0.5 <= t_f <= 2.0 and getattr(built, "degree", None) is not None and init_from is None:
        # For a cost t L((y - x) / t) with L homogeneous the OT map is the same for every t_f;
        # the network and its start are tuned at t_f = 1.
        warnings.warn(
            f"t_f = {t_f:g}: with the {cost_name!r} cost the optimal map does not depend on t_f, "
            "and maps trained far from t_f = 1 were measured wrong (the quadratic cost at 1e3 "
            "and 1e-8, p = 3 at 0.1 and 1e-3: means far from the target's); train with t_f=1.",
            stacklevel=2)
    p = getattr(built, "p", None)
    if isinstance(p, float) and 1 < p < MIN_TRAINABLE_P:
        warnings.warn(
            f"p = {p:g}: grad H(p) = |p|^(q-1) with q = p / (p - 1) = {p / (p - 1):.3g} vanishes "
            "for momenta below 1, and maps trained with p up to 1.1 were measured to stay at the "
            f"identity; p >= {MIN_TRAINABLE_P} trains.", stacklevel=2)
    if monotone_weight and monotone_directions == "power" and cost_name != "quadratic":
        raise ValueError("monotone_directions='power' needs the quadratic cost (it power-iterates "
                         f"on the map's Jacobian); with the {cost_name!r} cost use 'random' or 'all'.")
    ks = kt = None
    num_classes = None
    if labels is not None:
        if not isinstance(labels, (tuple, list)) or len(labels) != 2:
            raise ValueError("labels must be a pair (source labels, target labels).")
        ks = check_labels(labels[0], len(xs), "labels[0] (source)")
        kt = check_labels(labels[1], len(yt), "labels[1] (target)")
        num_classes = int(max(ks.max(), kt.max())) + 1
        missing = sorted(set(ks.tolist()) ^ set(kt.tolist()))
        if missing:
            raise ValueError(f"Classes {missing} appear on only one side; every class needs both.")
        present = len(set(ks.tolist()))
        for what, names in (("class_names", class_names), ("target_class_names", target_class_names)):
            if names is not None and len(names) < num_classes:
                raise ValueError(f"{what} has {len(names)} names for {num_classes} classes (ids "
                                 f"0..{num_classes - 1}): give one name per class id.")
        if init_from is None and num_classes > max(1024, 4 * present):
            # every id up to the largest is a class slot of the head (and a loop pass per step);
            # a fine-tune keeps its map's slots, so a subset of its classes is fine there
            raise ValueError(
                f"Class ids index the map's classes: got {present} classes with ids up to "
                f"{num_classes - 1}. Renumber them 0..K-1, e.g. with torch.unique(..., "
                "return_inverse=True).")
        if init_from is None and present < num_classes:
            absent = sorted(set(range(num_classes)) - set(ks.tolist()))
            shown = ", ".join(map(str, absent[:8])) + (", ..." if len(absent) > 8 else "")
            warnings.warn(
                f"Class ids index the map's classes: ids {shown} have no samples, so the map "
                "has untrained parts for them (a conditional head's maps refuse them). "
                "Renumber the classes 0..K-1 (torch.unique(..., return_inverse=True)) unless "
                "they are kept for a later fine-tune.", stacklevel=2)
    lambda_init, made_by = None, None
    if init_from is not None:
        hjmap, earlier = _fine_tune_start(init_from, dim, cost_name, cost_kwargs, t_f, num_classes,
                                 head if head is not None else "conditional" if conditional else None,
                                 head_kwargs)
        # Task runs record the MMD weight as `lambda` (digits-to-fashion: `train_lambda`). It
        # carries over only for the same match: each match has its own scale. (Maps saved before
        # `match` was recorded keep the old behaviour: the weight carries over.)
        lam = earlier.get("lambda", earlier.get("train_lambda"))
        lambda_init = float(lam) if isinstance(lam, (int, float)) and lam > 0 else None
        if earlier.get("match", mmd) != mmd:
            warnings.warn(f"The map to fine-tune was trained with the {earlier['match']!r} match "
                          f"and this run uses {mmd!r}: its MMD weight does not carry over; the "
                          "adaptive weight starts afresh.", stacklevel=2)
            lambda_init = None
        made_by = earlier.get("command")
        for name, value in (("class_names", class_names), ("target_class_names", target_class_names),
                            ("encoder_config", encoder)):
            if value is not None:
                setattr(hjmap, name, value)
        # The potential is defined in the map's own standardised coordinates: keep them.
        zs, zt = standardise(hjmap, xs, yt, keep=True)
        warm_start = False
    else:
        if resume and output_dir:
            _check_resumed_problem(output_dir, dim, cost_name, cost_kwargs, t_f)
        hjmap, zs, zt = _new_map(
            xs, yt, cost_name, cost_kwargs, t_f, num_classes, head, conditional, head_kwargs,
            seed, resume, output_dir, class_names, target_class_names, encoder)
    if warm_start:  # a resumed run then loads its checkpoint over it
        linear_warm_start(hjmap, zs, zt, ks, kt)
    if ks is not None and hjmap.conditional:  # the classes the maps will refuse
        before = hjmap.untrained_classes if init_from is not None else range(hjmap.num_classes)
        hjmap.untrained_classes = sorted(set(before) - set(ks.tolist()))
    obj = HJObjective(
        hjmap,
        ObjectiveConfig(
            lambda_mmd=lambda_mmd, lambda_slack=lambda_slack, mmd=mmd, mmd_options=dict(mmd_options or {}),
            backward_mmd=backward_mmd,
            classwise=labels is not None,
            # HJ collocation points: as many as a batch, but a batch beyond the data is capped
            # (make_batch_fn) and so are they, past 4,096 (a --batch-size of 10^8 allocated GBs)
            n_colloc=n_colloc or min(batch_size, max(len(zs), len(zt), 4096)),
            monotone_weight=monotone_weight,
            monotone_directions=monotone_directions, cycle_weight=cycle_weight,
            cycle_share=cycle_share, semidual_weight=semidual_weight,
            semidual_side=semidual_side, match_pool=match_pool,
            manifold_weight=manifold_weight, manifold_samples=manifold_samples,
            manifold_gradient=manifold_gradient,
            # fine-tuning goes on with the trained map's multiplier (the ascent takes ~1,000
            # steps to climb back from the default start, with the match held too loosely)
            **({"lambda_init": lambda_init} if lambda_init and lambda_mmd == "auto" else {}),
        ),
        sampler,
        projection=projection,
    )
    obj.labels_checked = True  # above, against the map's classes
    if manifold_weight:
        obj.set_manifold_floor(zs, zt)
    batch_fn = make_batch_fn(zs, zt, ks, kt, batch_size, seed)
    acc = accelerator or make_accelerator()
    result = train(
        obj, batch_fn, train_config,
        accelerator=acc,
        after_step=lambda o, logs: o.update_lambda(
            logs.get("ratio", float("nan")), logs.get("gap_residual"), logs.get("gap_match")),
        save_fn=lambda o, folder: o.map.save_pretrained(folder),
        parameters=list(hjmap.parameters()), on_start=on_start,
    )
    hjmap.eval()  # trained in place (accelerate wraps, but does not copy, the module)
    hjmap.metrics["lambda"] = float(obj.log_lambda.exp())  # where a fine-tune starts
    hjmap.metrics["match"] = mmd  # the scale that weight belongs to
    if init_from is not None:  # provenance, for the model card
        hjmap.metrics["init_from"] = str(init_from) if not isinstance(init_from, HJMap) else "an HJMap"
        if made_by:
            hjmap.metrics["init_from_command"] = made_by
    return (hjmap, result) if return_history else hjmap


def _check_checkpoint_folder(out: Path) -> None:
    """``fit`` writes only ``checkpoints/`` into ``output_dir``, and a fresh fit moves the
    checkpoints it finds there aside: refuse folders whose checkpoints belong to something else
    (an `hjtranslate train` run, a VAE's or judge's training) and pipeline folders."""
    if (out / PIPELINE_INDEX_FILE).is_file():
        raise ValueError(f"output_dir {out} is a translation pipeline folder: name a new folder "
                         "for fit's checkpoints.")
    try:
        recorded = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return  # nothing there, fit's own checkpoints, or an HJMap saved beside them
    if not isinstance(recorded, dict):
        return
    if "task" in recorded:
        task = recorded["task"]
        raise ValueError(f"output_dir {out} holds an `hjtranslate train {task}` run, whose "
                         "checkpoints a fit there would replace: name a new folder, or continue "
                         f"that run with `hjtranslate train {task} --resume --output-dir {out}`.")
    kind = recorded.get("_class_name") or recorded.get("architecture")
    if kind:
        raise ValueError(f"output_dir {out} holds a {kind} model, not fit's checkpoints: name a "
                         "new folder.")


def _new_map(xs, yt, cost_name, cost_kwargs, t_f, num_classes, head, conditional, head_kwargs,
             seed, resume, output_dir, class_names, target_class_names, encoder):
    """A fresh map with fit's default head settings, and the samples standardised for it."""
    dim = xs.shape[1]
    head = head or ("conditional" if conditional else "mlp")
    # Defaults go to the heads built for them (a third-party head's own defaults stand).
    head_cls = registry.resolve("head", head).obj
    accepted = (inspect.signature(head_cls.__init__).parameters
                if getattr(head_cls, "uses_fit_defaults", False) else {})
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    defaults = {k: v for k, v in default_head_kwargs(dim, cost_name, t_f).items()
                if k in accepted or takes_all}
    kinds = getattr(head_cls, "quadratic_kinds", None)  # a head that takes only some parts
    # (a named part only: True, another cost's affine part, stays for the head to refuse)
    if kinds and isinstance(defaults.get("quadratic"), str) and defaults["quadratic"] not in kinds:
        defaults["quadratic"] = kinds[0]
        defaults.pop("quadratic_gain", None)  # the gain of fit's default part: not this one's
    if "quadratic" in (head_kwargs or {}):  # a part chosen by the caller: its own gain
        defaults.pop("quadratic_gain", None)
    hk = {**defaults, **(head_kwargs or {})}
    if not hk.get("fourier_features") and "fourier_features" not in accepted:
        # "no Fourier features" is every other head's architecture: nothing to pass on
        hk.pop("fourier_features", None)
        hk.pop("fourier_scale", None)
    if resume and output_dir:
        hk = _resumed_head_kwargs(output_dir, hk) or hk
    wrong_cost = head_cost_mismatch(head_cls, head, registry.create("cost", cost_name,
                                                                    **cost_kwargs), cost_name)
    if wrong_cost:
        raise ValueError(wrong_cost)
    # Seed before the head draws its initial weights (torch's own start seed differs per
    # process); train() seeds again for the steps.
    set_seed(seed)
    hjmap = HJMap(
        dim, cost=cost_name, cost_kwargs=cost_kwargs, head=head, head_kwargs=hk, t_f=t_f,
        num_classes=num_classes, class_names=class_names,
        target_class_names=target_class_names, encoder=encoder,
    )
    saved = _checkpoint_normalisation(output_dir) if resume and output_dir else None
    if saved is None:
        return hjmap, *standardise(hjmap, xs, yt)
    # the checkpoint's weights live in its own coordinates: the batches must too
    both = torch.cat([xs, yt])
    shift, spread = both.double().mean(0), common_spread(both) or 1.0
    moved = float((shift - saved[0].double()).norm()) / float(saved[1])
    if abs(spread / float(saved[1]) - 1) > RESUMED_DATA_TOLERANCE or moved > RESUMED_DATA_TOLERANCE:
        warnings.warn(f"resume: these samples' mean and spread differ from those of the run in "
                      f"{output_dir} (spread {spread:.4g} against {float(saved[1]):.4g}; mean "
                      f"moved by {moved:.3g} spreads): the map keeps the run's coordinates. "
                      "Resume with the same data, or fine-tune on new data (init_from / "
                      "--init-from).", UserWarning, stacklevel=3)
    hjmap.set_normalization(*saved)
    return hjmap, *standardise(hjmap, xs, yt, keep=True)


#: a resume whose samples' mean or spread moved by more than this share of the run's spread
#: is warned of (the tasks draw the same samples again: no change at all)
RESUMED_DATA_TOLERANCE = 0.05


def _checkpoint_normalisation(output_dir: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The shift and scale of the newest checkpoint's map in ``output_dir`` (None: none)."""
    from safetensors import safe_open

    from .training import last_checkpoint_json

    found = last_checkpoint_json(output_dir, "model/config.json")
    if found is None:
        return None
    try:
        with safe_open(str(found[1].parent / WEIGHTS_NAME), framework="pt") as f:
            return f.get_tensor("shift"), f.get_tensor("scale")
    except Exception:  # noqa: BLE001 - a damaged checkpoint: train() passes over it as well
        return None


def _fine_tune_start(init_from: str | Path | HJMap, dim: int, cost_name: str, cost_kwargs: dict,
                     t_f: float, num_classes: int | None, head: str | None,
                     head_kwargs: dict[str, Any] | None) -> tuple[HJMap, dict[str, Any]]:
    """A copy of the map ``init_from`` names, checked against what ``fit`` was asked for, and
    the figures it recorded (its training's command and final MMD weight among them)."""
    import copy

    if isinstance(init_from, HJMap):
        what, base = "the init_from map", copy.deepcopy(init_from).cpu()  # trained on a GPU
    else:
        what, base = f"init_from {init_from}", HJMap.from_pretrained(str(init_from))
    if base.dim != dim:  # a map for other data: the other differences do not matter
        raise ValueError(f"Cannot fine-tune {what}: it maps {base.dim}-d points and the samples "
                         f"are {dim}-d (a map trained on other data or for another task).")
    problems = []
    if base.cost_name != cost_name or base.cost.config() != registry.create(
            "cost", cost_name, **cost_kwargs).config():
        problems.append(f"it was trained for the cost {base.cost_name} {base.cost.config()}, "
                        f"not {cost_name} {cost_kwargs}")
    if abs(base.t_f - float(t_f)) > 1e-12:
        problems.append(f"its t_f is {base.t_f}, not {t_f} (pass t_f={base.t_f})")
    if head is not None and head != base.head_name:
        problems.append(f"its head is {base.head_name!r}, not {head!r}")
    if base.conditional and num_classes is None:
        problems.append("its head is conditional: pass the class labels")
    elif base.conditional and num_classes > base.num_classes:
        problems.append(f"it knows {base.num_classes} classes and the labels hold {num_classes}")
    wrong_cost = head_cost_mismatch(type(base.head), base.head_name, base.cost, base.cost_name)
    if wrong_cost:  # a map saved so loads (with a warning); training it on would not help
        problems.append(wrong_cost[0].lower() + wrong_cost[1:].rstrip("."))
    if problems:
        raise ValueError(f"Cannot fine-tune {what}: " + "; ".join(problems) + ".")
    _name_overridden_head_settings(head_kwargs or {}, base.config_dict()["head_kwargs"],
                                   "Fine-tuning with the trained map's")
    earlier, base.metrics = base.metrics, {}  # the card of the fine-tuned map records its own run
    base.train()
    return base, earlier


def standardise(hjmap: HJMap, xs: torch.Tensor, yt: torch.Tensor,
                keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Set ``hjmap``'s normalisation from both sample sets and return them standardised: one
    common similarity transform (OT maps of homogeneous costs commute with it), so that
    defaults work whatever the units of the data. ``keep=True`` standardises with the map's
    own normalisation (a trained map being fine-tuned)."""
    if not keep:
        both = torch.cat([xs, yt])
        hjmap.set_normalization(both.double().mean(0), common_spread(both) or 1.0)
    return (xs - hjmap.shift) / hjmap.scale, (yt - hjmap.shift) / hjmap.scale


def _last_checkpoint_config(output_dir: str) -> dict[str, Any] | None:
    """The map config of the newest readable checkpoint in ``output_dir`` (None: none)."""
    from .training import last_checkpoint_json

    found = last_checkpoint_json(output_dir, "model/config.json")
    return found[0] if found else None


def _check_resumed_problem(output_dir: str, dim: int, cost_name: str, cost_kwargs: dict,
                           t_f: float) -> None:
    """A resume continues the transport problem its checkpoints were trained for: the same
    dimension, cost (with its options) and time horizon, or a clear error."""
    saved = _last_checkpoint_config(output_dir)
    if saved is None:
        return
    wanted = json.loads(json.dumps(registry.create("cost", cost_name, **cost_kwargs).config()))
    had = saved.get("cost_kwargs") or {}
    try:  # as the installed plugin rebuilds it (a default it has gained since is no change)
        had = json.loads(json.dumps(registry.create("cost", saved.get("cost"), **had).config()))
    except Exception:  # noqa: BLE001 - an unknown or changed plugin: compare as saved
        pass
    problems = []
    if saved.get("dim") not in (None, dim):
        problems.append(f"{saved['dim']}-d points, not {dim}-d")
    if (saved.get("cost"), had) != (cost_name, wanted):
        problems.append(f"the cost {saved.get('cost')} {json.dumps(saved.get('cost_kwargs') or {})}, "
                        f"not {cost_name} {json.dumps(wanted)}")
    if saved.get("t_f") is not None and abs(float(saved["t_f"]) - float(t_f)) > 1e-12:
        problems.append(f"t_f {saved['t_f']}, not {t_f}")
    if problems:
        raise ValueError(f"resume: the checkpoints in {output_dir} were trained for "
                         + "; ".join(problems) + ". Resume with the run's own settings, or start "
                         "a new run (a fine-tune from it: init_from / --init-from).")


def _resumed_head_kwargs(output_dir: str, requested: dict[str, Any]) -> dict[str, Any]:
    """The head settings of the run being resumed (``{}`` when there is no checkpoint): its
    weights only fit its own architecture, and its quadratic parameters are stored divided by
    its own gain (resuming with another gain would silently rescale the map). Settings that
    differ from ``requested`` are named."""
    config = _last_checkpoint_config(output_dir)
    if config is None:
        return {}
    saved = config.get("head_kwargs", {})
    # The saved settings replace the requested ones whole: a setting the checkpoint does not
    # record (a newer default, such as Fourier features) must not be added to its architecture.
    _name_overridden_head_settings(requested, saved, "Resuming with the checkpoint's")
    return saved


def _name_overridden_head_settings(requested: dict[str, Any], saved: dict[str, Any], doing: str) -> None:
    """Warn about the requested head settings that a saved map's own settings override."""
    import warnings

    changed = {k: (v, saved.get(k)) for k, v in requested.items() if v != saved.get(k)}
    if changed:
        warnings.warn(
            f"{doing} own head settings, not the requested ones: "
            + ", ".join(f"{k}={old!r} -> {new!r}" for k, (old, new) in changed.items()),
            stacklevel=4,  # fit's caller
        )


def linear_warm_start(hjmap: HJMap, zs: torch.Tensor, zt: torch.Tensor,
                      ks: torch.Tensor | None = None, kt: torch.Tensor | None = None) -> bool:
    """Set the head's ``hopf_lax_spd`` quadratic part (if it has one) to the quadratic-cost OT
    map between the Gaussians with the samples' means and covariances (the linear
    Monge-Kantorovich map, exact between Gaussians), in standardised coordinates. Returns
    whether it did. Measured on the Gaussian pairs, it saves most of the training steps; the
    network and the match term then learn what is not affine. A part with one map per class
    (``hopf_lax_per_class``) gets class ``k``'s map from the class-``k`` samples
    (``ks``, ``kt``)."""
    # Duck-typed, so that a third-party head can take part: a ``quadratic`` submodule with
    # ``set_affine_map(matrix, offset)`` (or ``set_affine_maps(matrices, offsets)``, per class).
    quad = getattr(hjmap.head, "quadratic", None)
    # (a part with one map for all, hopf_lax_basis, takes the pooled map even with labels)
    per_class = (callable(getattr(quad, "set_affine_maps", None)) and ks is not None
                 and not callable(getattr(quad, "set_affine_map", None)))
    if not (per_class or callable(getattr(quad, "set_affine_map", None))):
        return False
    # The Gaussian map is the quadratic cost's, and the part reaches it at t_max: at t_f only
    # when the two agree.
    if hjmap.cost_name != "quadratic" or abs(float(getattr(quad, "t_max", hjmap.t_f)) - hjmap.t_f) > 1e-12:
        return False
    from .metrics import gaussian_ot_map

    d = zs.shape[1]
    z0, z1 = zs.double(), zt.double()

    def moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.cov(z.T).reshape(d, d)
        # A ridge keeps degenerate data (colours of a flat image, a 1-D line) invertible.
        ridge = 1e-4 * float(c.trace()) / d + 1e-8
        return z.mean(0), c + ridge * torch.eye(d, dtype=z.dtype, device=z.device)

    def gaussian_map(z0: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (m0, s0), (m1, s1) = moments(z0), moments(z1)
        a, _ = gaussian_ot_map(m0, s0, m1, s1)
        return a, m1 - a @ m0  # T(x) = a x + (m1 - a m0)

    def spread(z0: torch.Tensor, z1: torch.Tensor) -> bool:
        # A side that does not spread (one colour) has no linear map to or from the other: its
        # Gaussian map is a ridge-sized point blown up (or the reverse), a start training could
        # not leave (measured: a flat image recoloured to a clipped cyan).
        v0, v1 = float(z0.var(0).sum()), float(z1.var(0).sum())
        return min(v0, v1) > 1e-6 * max(v0, v1)

    if not spread(z0, z1):
        warnings.warn("the source or target samples hardly spread (a single colour?): no linear "
                      "warm start, the map is learned from scratch (a short run may barely "
                      "move: a few hundred steps reach one colour).", stacklevel=3)
        return False
    if not per_class:
        quad.set_affine_map(*gaussian_map(z0, z1))
        return True
    # A class with no more samples than dimensions on a side has no usable covariance (in 64-d,
    # 10 samples gave map eigenvalues from 0.004 to 186): it takes the pooled map.
    pooled = gaussian_map(z0, z1)
    maps = [gaussian_map(z0[ks == k], z1[kt == k])
            if min((ks == k).sum(), (kt == k).sum()) > d and spread(z0[ks == k], z1[kt == k])
            else pooled for k in range(hjmap.num_classes)]
    quad.set_affine_maps(torch.stack([a for a, _ in maps]), torch.stack([b for _, b in maps]))
    return True


def _batch_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one rank's batch at one step. The CPU generator keeps 32 bits of a seed, so
    ranks other than 0 take hashed seeds: an offset per rank (as before) made rank 1 at step s
    draw rank 0's batch of a later step. Rank 0 keeps its stream (single-process runs as ever)."""
    if rank == 0:
        return seed * 1_000_003 + step
    return int(np.random.SeedSequence((seed, rank, step)).generate_state(1)[0])


def make_batch_fn(zs: torch.Tensor, zt: torch.Tensor, ks: torch.Tensor | None, kt: torch.Tensor | None,
                  batch_size: int, seed: int) -> Callable[[int, int], dict[str, Any]]:
    """Random minibatches seeded by (seed, step, rank). With labels, each batch is balanced
    over classes and sources and targets are sorted alike (source i and target i share a class)."""
    if ks is not None:
        classes = sorted(set(ks.tolist()))
        src_idx = [torch.nonzero(ks == k)[:, 0] for k in classes]
        tgt_idx = [torch.nonzero(kt == k)[:, 0] for k in classes]
        # capped at the classes' sizes, as an unlabelled batch is at the data's: a batch far
        # beyond the data only repeats points (and its match grows with its square)
        largest = min(max(len(s) for s in src_idx), max(len(t) for t in tgt_idx))
        per = max(min(batch_size // len(classes), largest), 2)

    def batch_fn(step: int, rank: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(_batch_seed(seed, step, rank))
        if ks is None:
            i = torch.randint(len(zs), (min(batch_size, len(zs)),), generator=g)
            j = torch.randint(len(zt), (min(batch_size, len(zt)),), generator=g)
            return {"xs": zs[i], "yt": zt[j], "generator_seed": int(torch.randint(2**31, (1,), generator=g))}
        i = torch.cat([s[torch.randint(len(s), (per,), generator=g)] for s in src_idx])
        j = torch.cat([t[torch.randint(len(t), (per,), generator=g)] for t in tgt_idx])
        return {
            "xs": zs[i], "yt": zt[j], "ks": ks[i], "kt": kt[j],
            "generator_seed": int(torch.randint(2**31, (1,), generator=g)),
        }

    return batch_fn
