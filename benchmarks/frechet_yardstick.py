"""What digits-to-fashion's Frechet goal ("within 1.5x the VAE floor") can see.

The floor decodes the real test images' own latents. A *perfect* latent map (pushed latents with
exactly the target's law) would still produce other images of that law, in the source's class
mix: its distance, decodes of the target's training latents drawn with the translated test
set's class counts (``perfect_map_images``), is the yardstick a map can reach. This script
draws it for a few seeds, splits a map's distance per class beside the yardstick's, and (for the
backward direction) shrinks the pulled-back latents' components along each class's thin latent
directions to the digits' spread (``duality_gap_noise.shrink_thin``) to see whether those
directions are what the judge sees.

    python benchmarks/frechet_yardstick.py --map models/digits-to-fashion/map

With ``--inverse-steps 20 60 150`` it measures instead a backward map read from the forward one:
each pulled-back latent solved from ``T(x) = y`` (:func:`invert_forward`), started at the
closed-form backward map, against that closed form (judge accuracy, Frechet distance, and the
residual ``|T(x) - y|`` relative to ``|y|``).

With ``--accuracy`` it reads the accuracy goal the same way: per class and direction, the
judge's accuracy on the map's translations, on the real test images, on their VAE
reconstructions and on a perfect map's decodes; and, for the Frechet goal, how much of a
perfect map's distance is the class mix it inherits from the source side (a perfect map drawn
with the target test set's own class counts beside one drawn with the source's).

With ``--train-vs-test`` it asks whether the map generalises: it translates 1,000 training
images per class (the map was trained on their latents) and the 10,000 test images, both
directions, and scores each against the real test images of the other side (judge accuracy and
Frechet distance). A map that fits its training latents much better than unseen ones shows it
here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from duality_gap_noise import shrink_thin  # noqa: E402


def main() -> None:
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.data import load_dataset
    from hjtranslate.hjmap import HJMap
    from hjtranslate.judges import frechet_distance, load_judge
    from hjtranslate.tasks.digits_to_fashion import _cache_dir, encoded, perfect_map_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--map", default="models/digits-to-fashion/map")
    ap.add_argument("--vae", default=None, help="default: the shipped VAE")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/frechet_yardstick.json")
    ap.add_argument("--inverse-steps", type=int, nargs="+", default=None, metavar="STEPS",
                    help="measure the numerical inverse of the forward map instead (see above)")
    ap.add_argument("--accuracy", action="store_true",
                    help="per-class accuracy beside its yardsticks, and the class mix (see above)")
    ap.add_argument("--train-vs-test", action="store_true",
                    help="translate training images beside test images (see above)")
    args = ap.parse_args()

    enc, m, cache = VAEEncoder(args.vae), HJMap.from_pretrained(args.map), _cache_dir()
    xs, zs, ks = encoded(enc, "mnist", "test", args.data_dir, None, cache)
    xt, zt, kt = encoded(enc, "fashion-mnist", "test", args.data_dir, None, cache)
    judge_m, judge_f = load_judge("mnist"), load_judge("fashion-mnist")
    with torch.no_grad():
        fwd = torch.cat([m.forward(zs[i:i + 2000], ks[i:i + 2000]) for i in range(0, len(zs), 2000)])
        bwd = torch.cat([m.backward(zt[i:i + 2000], kt[i:i + 2000]) for i in range(0, len(zt), 2000)])
    result: dict = {
        "map": args.map, "date": datetime.date.today().isoformat(), "machine": platform.machine(),
        "fd_forward": frechet_distance(judge_f, xt, enc.decode(fwd).cpu()),
        "fd_backward": frechet_distance(judge_m, xs, enc.decode(bwd).cpu()),
        "fd_forward_floor": frechet_distance(judge_f, xt, enc.decode(zt).cpu()),
        "fd_backward_floor": frechet_distance(judge_m, xs, enc.decode(zs).cpu()),
        "perfect_map": [],
    }
    if args.train_vs_test:
        result["train_vs_test"] = train_vs_test(m, enc, cache, args.data_dir, judge_m, judge_f,
                                                (xs, zs, ks), (xt, zt, kt))
        write(result, args.out)
        return
    if args.accuracy:
        floors = {side: result[f"fd_{side}_floor"] for side in ("forward", "backward")}
        result.update(accuracy_rows(enc, args.data_dir, judge_m, judge_f, fwd, bwd,
                                    (xs, zs, ks), (xt, zt, kt), args.seeds, floors))
        write(result, args.out)
        return
    if args.inverse_steps:
        result["backward_by_inverting_forward"] = inverse_rows(m, enc, judge_m, xs, zt, kt, bwd,
                                                               args.inverse_steps)
        write(result, args.out)
        return
    ns = argparse.Namespace(data_dir=args.data_dir)
    for seed in range(args.seeds):
        img_f, k_f = perfect_map_images(enc, ns, "fashion-mnist", ks, seed)
        img_b, k_b = perfect_map_images(enc, ns, "mnist", kt, seed)
        row = {"seed": seed, "fd_forward": frechet_distance(judge_f, xt, img_f),
               "fd_backward": frechet_distance(judge_m, xs, img_b),
               "accuracy_forward": judge_f.accuracy(img_f, k_f),
               "accuracy_backward": judge_m.accuracy(img_b, k_b)}
        result["perfect_map"].append(row)
        print(f"a perfect map, draw {seed}: Frechet forward {row['fd_forward']:.3f}, backward "
              f"{row['fd_backward']:.3f}; accuracy {row['accuracy_forward']:.2%} / "
              f"{row['accuracy_backward']:.2%}")

    # Per class, backward: the map's translations of clothing class k against the real test
    # digits k, beside 1,000 decoded training latents of digit k.
    _, labels = load_dataset("mnist", "train", args.data_dir)
    g = torch.Generator().manual_seed(0)
    per_class = []
    for c in range(10):
        pool = torch.nonzero(labels == c)[:, 0]
        draw = pool[torch.randperm(len(pool), generator=g)[:1000]]
        _, z, _ = encoded(enc, "mnist", "train", args.data_dir, draw, cache)
        per_class.append({
            "class": c,
            "fd_backward": frechet_distance(judge_m, xs[ks == c], enc.decode(bwd[kt == c]).cpu()),
            "fd_backward_of_a_perfect_map": frechet_distance(judge_m, xs[ks == c], enc.decode(z).cpu()),
        })
        print(f"class {c}: backward {per_class[-1]['fd_backward']:.3f}, "
              f"a perfect map {per_class[-1]['fd_backward_of_a_perfect_map']:.3f}")
    result["backward_per_class"] = per_class

    # The thin directions of each digit class: the pulled-back spread there, and the distance
    # after shrinking it to the digits' spread.
    _, z_train, k_train = encoded(enc, "mnist", "train", args.data_dir, None, cache)
    spread = []
    for c in range(10):
        y = z_train[k_train == c].double()
        ev, vec = torch.linalg.eigh(torch.cov(y.T))
        proj = (bwd[kt == c].double() - y.mean(0)) @ vec
        spread.append({"class": c, "variance_ratio_10_thinnest": (proj.var(0) / ev)[:10].tolist(),
                       "mean_offset_max_sd": float((proj.mean(0).pow(2) / ev).sqrt().max())})
    result["backward_thin_spread"] = spread
    result["backward_thin_shrunk"] = []
    for threshold in (0.001, 0.01, 0.05):
        shrunk, count = shrink_thin(bwd, kt, z_train, k_train, threshold)
        fd = frechet_distance(judge_m, xs, enc.decode(shrunk).cpu())
        result["backward_thin_shrunk"].append(
            {"threshold": threshold, "thin_directions": count, "fd_backward": fd})
        print(f"thin directions under {threshold:g} x mean eigenvalue ({count}): backward {fd:.3f}")
    write(result, args.out)


def write(result: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


@torch.no_grad()
def invert_forward(m, y: torch.Tensor, k: torch.Tensor, x0: torch.Tensor, steps: int,
                   step_size: float = 0.3) -> torch.Tensor:
    """Solve ``T(x) = y`` for x by steps ``x - a (T(x) - y)`` (gradient descent on the convex
    ``phi(x) - <x, y>`` when ``T = grad phi``), each point with its own step ``a``: grown by
    1.2 after a step that lowers its residual, halved (and the step refused) otherwise. A fixed
    ``a = 1`` (the fixed point ``x = y - t_f v(x)``) diverges on the shipped map."""
    x, a = x0.clone(), torch.full((len(y), 1), step_size)
    r = m.forward(x, k) - y
    for _ in range(steps):
        x_new = x - a * r
        r_new = m.forward(x_new, k) - y
        better = r_new.norm(dim=1) < r.norm(dim=1)
        x, r = torch.where(better[:, None], x_new, x), torch.where(better[:, None], r_new, r)
        a = torch.where(better[:, None], 1.2 * a, 0.5 * a)
    return x


def inverse_rows(m, enc, judge_m, xs, zt, kt, bwd, all_steps: list[int]) -> list[dict]:
    from hjtranslate.judges import frechet_distance

    def row(pulled: torch.Tensor, steps: int, seconds: float) -> dict:
        with torch.no_grad():
            pushed = torch.cat([m.forward(pulled[i:i + 2000], kt[i:i + 2000])
                                for i in range(0, len(zt), 2000)])
        images = enc.decode(pulled).cpu()
        out = {"steps": steps, "seconds": seconds,
               "residual": float((pushed - zt).norm(dim=1).mean() / zt.norm(dim=1).mean()),
               "accuracy_backward": judge_m.accuracy(images, kt),
               "fd_backward": frechet_distance(judge_m, xs, images)}
        print(out, flush=True)
        return out

    rows = [row(bwd, 0, 0.0)]  # the closed form
    for steps in all_steps:
        t0 = time.perf_counter()
        pulled = torch.cat([invert_forward(m, zt[i:i + 2000], kt[i:i + 2000], bwd[i:i + 2000], steps)
                            for i in range(0, len(zt), 2000)])
        rows.append(row(pulled, steps, time.perf_counter() - t0))
    return rows


@torch.no_grad()
def accuracy_rows(enc, data_dir, judge_m, judge_f, fwd, bwd, mnist_test, fashion_test,
                  seeds: int, floors: dict[str, float] | None = None) -> dict:
    """Per class and direction: the judge's accuracy on the translations, the real test images,
    their reconstructions and a perfect map's decodes (draw 0); then, over ``seeds`` draws, the
    Frechet distance over the floor of a perfect map in the source's class mix (the task's) and
    in the target test set's own. ``floors``: the Frechet floors per direction, when known."""
    from hjtranslate.judges import frechet_distance
    from hjtranslate.tasks.digits_to_fashion import perfect_map_images

    ns = argparse.Namespace(data_dir=data_dir)
    out: dict = {}
    for direction, judge, name, (x_real, z_real, k_real), k_source, moved in (
            ("forward", judge_f, "fashion-mnist", fashion_test, mnist_test[2], fwd),
            ("backward", judge_m, "mnist", mnist_test, fashion_test[2], bwd)):
        perfect, k_perfect = perfect_map_images(enc, ns, name, k_source, 0)
        recon = enc.decode(z_real).cpu()
        preds = {what: judge.predict(images)[0].cpu() for what, images in (
            ("translations", enc.decode(moved).cpu()), ("real", x_real), ("reconstructions", recon),
            ("perfect_map", perfect))}
        labels = {"translations": k_source, "real": k_real, "reconstructions": k_real,
                  "perfect_map": k_perfect}
        rows = [{"class": c, **{what: float((p[labels[what] == c] == c).float().mean())
                                for what, p in preds.items()}} for c in range(10)]
        for row in rows:
            print(f"{direction}, class {row['class']}: " + ", ".join(
                f"{what} {row[what]:.1%}" for what in preds), flush=True)
        floor = floors[direction] if floors else frechet_distance(judge, x_real, recon)
        mix = []
        for seed in range(seeds):
            ratios = {}
            for what, counts_from in (("source_mix", k_source), ("own_mix", k_real)):
                images, _ = perfect_map_images(enc, ns, name, counts_from, seed)
                ratios[what] = frechet_distance(judge, x_real, images) / floor
            mix.append({"seed": seed, **ratios})
            print(f"{direction}, a perfect map over the floor, draw {seed}: in the source's class "
                  f"mix {ratios['source_mix']:.2f}x, in the target's own {ratios['own_mix']:.2f}x",
                  flush=True)
        out[f"accuracy_per_class_{direction}"] = rows
        out[f"perfect_map_class_mix_{direction}"] = mix
    return out


def train_vs_test(m, enc, cache, data_dir, judge_m, judge_f, mnist_test, fashion_test) -> dict:
    """Judge accuracy and Frechet distance of translations of training and of test images, each
    against the real test images of the other side."""
    from hjtranslate.data import load_dataset
    from hjtranslate.judges import frechet_distance
    from hjtranslate.tasks.digits_to_fashion import balanced_subset, encoded

    def translate(z: torch.Tensor, k: torch.Tensor, forward: bool) -> torch.Tensor:
        f = m.forward if forward else m.backward
        with torch.no_grad():
            return torch.cat([f(z[i:i + 2000], k[i:i + 2000]) for i in range(0, len(z), 2000)])

    rows = {}
    for forward, (name, judge, real) in ((True, ("mnist", judge_f, fashion_test[0])),
                                         (False, ("fashion-mnist", judge_m, mnist_test[0]))):
        _, labels = load_dataset(name, "train", data_dir)
        _, z_train, k_train = encoded(enc, name, "train", data_dir, balanced_subset(labels, 1000, 0), cache)
        _, z_test, k_test = (mnist_test if forward else fashion_test)
        for split, z, k in (("train", z_train, k_train), ("test", z_test, k_test)):
            images = enc.decode(translate(z, k, forward)).cpu()
            row = {"accuracy": judge.accuracy(images, k), "fd": frechet_distance(judge, real, images)}
            rows[f"{'forward' if forward else 'backward'}_{split}"] = row
            print(f"{'forward' if forward else 'backward'}, {split} images: {row}", flush=True)
    return rows


if __name__ == "__main__":
    main()
