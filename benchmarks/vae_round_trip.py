"""How far a digits-to-fashion map's translations sit from the VAE's own latents, and what the
judges make of that.

The VAE's decoder was trained only on latents its encoder produces. A latent's *move* under the
VAE's round trip, ``|encode(decode(z)) - z|``, is small for those and larger for a latent the
decoder was never taught to draw. For each map and direction this script reports the mean move
of the translated test latents beside that of the real test latents of the side they translate
to. It then scores the translations with the judges (class accuracy, Frechet distance to the
real test images) after 0, 1, ... round trips: each round trip replaces a translated latent by
the latent of its decoded image.

    python benchmarks/vae_round_trip.py --maps models/digits-to-fashion/map runs/bench/RUN/map

With ``--per-class`` it also compares, class by class and in each direction, what the training
match sees with what the judge sees: the energy distance in the latent space between the
translated and the real test latents, the energy distance between their decodes and the real
test images in pixel space (what a match through the decoder would see), and the judge's
Frechet distance between those decodes and the real test images, each beside a perfect map's
(the target's training latents: ``perfect_map_images``'s draw, 1,000 per class).

The training term that keeps translations near the VAE's own latents is
``hjtranslate train digits-to-fashion --manifold-weight W`` (objective.py, ``manifold_weight``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch


@torch.no_grad()
def move(enc, z: torch.Tensor, images: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """The round trip of ``z`` (encode after decode; ``images``: ``z`` decoded, when already
    at hand) and the mean length of the move."""
    back = enc.encode(enc.decode(z) if images is None else images)
    return back, float((back - z).norm(dim=1).mean())


@torch.no_grad()
def per_class(enc, judge, z: torch.Tensor, k: torch.Tensor, real: torch.Tensor, direction: str,
              data_dir: str | None, cache) -> list[dict]:
    """Per class: latent energy distance and judge Frechet distance of the translations ``z``
    (classes ``k``) and of a perfect map's latents to the real test latents and images."""
    from hjtranslate.data import load_dataset
    from hjtranslate.judges import frechet_distance
    from hjtranslate.losses import energy_distance
    from hjtranslate.tasks.digits_to_fashion import balanced_subset, encoded

    name, other = ("fashion-mnist", "mnist") if direction == "forward" else ("mnist", "fashion-mnist")
    _, zr, kr = encoded(enc, name, "test", data_dir, None, cache)
    _, labels = load_dataset(name, "train", data_dir)
    _, zp, kp = encoded(enc, name, "train", data_dir, balanced_subset(labels, 1000, seed=2), cache)
    rows = []
    for c in range(10):
        real_z, real_img = zr[kr == c][:1000], real[kr == c]
        mapped, perfect = z[k == c][:1000], zp[kp == c][:1000]
        n = min(len(real_z), len(mapped), len(perfect))
        mapped_img, perfect_img = enc.decode(mapped).cpu(), enc.decode(perfect).cpu()
        row = {"class": c,
               "latent_energy": float(energy_distance(mapped[:n], real_z[:n])),
               "latent_energy_of_a_perfect_map": float(energy_distance(perfect[:n], real_z[:n])),
               "pixel_energy": float(energy_distance(mapped_img[:n].flatten(1), real_img[:n].flatten(1))),
               "pixel_energy_of_a_perfect_map": float(energy_distance(perfect_img[:n].flatten(1),
                                                                      real_img[:n].flatten(1))),
               "fd": frechet_distance(judge, real_img, mapped_img),
               "fd_of_a_perfect_map": frechet_distance(judge, real_img, perfect_img)}
        rows.append(row)
        print(f"{direction} class {c} (from {other}): latent energy {row['latent_energy']:.4f} "
              f"(a perfect map {row['latent_energy_of_a_perfect_map']:.4f}), pixel energy "
              f"{row['pixel_energy']:.4f} (a perfect map {row['pixel_energy_of_a_perfect_map']:.4f}), "
              f"Frechet {row['fd']:.2f} (a perfect map {row['fd_of_a_perfect_map']:.2f})", flush=True)
    return rows


@torch.no_grad()
def main() -> None:
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.hjmap import HJMap
    from hjtranslate.judges import frechet_distance, load_judge
    from hjtranslate.tasks.digits_to_fashion import _cache_dir, encoded

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", nargs="+", default=["models/digits-to-fashion/map"])
    ap.add_argument("--vae", default=None, help="default: the shipped VAE")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--round-trips", type=int, default=2, help="score after 0..N round trips")
    ap.add_argument("--per-class", action="store_true", help="latent match against judge, per class")
    ap.add_argument("--out", default="benchmarks/results/vae_round_trip.json")
    args = ap.parse_args()

    enc, cache = VAEEncoder(args.vae), _cache_dir()
    xs, zs, ks = encoded(enc, "mnist", "test", args.data_dir, None, cache)
    xt, zt, kt = encoded(enc, "fashion-mnist", "test", args.data_dir, None, cache)
    judges = {"forward": load_judge("fashion-mnist"), "backward": load_judge("mnist")}
    result: dict = {
        "date": datetime.date.today().isoformat(), "machine": platform.machine(),
        "real_move": {"mnist": move(enc, zs)[1], "fashion-mnist": move(enc, zt)[1]},
        "maps": {},
    }
    print(f"real test latents move {result['real_move']['mnist']:.3f} (MNIST), "
          f"{result['real_move']['fashion-mnist']:.3f} (Fashion-MNIST)")
    for path in args.maps:
        m = HJMap.from_pretrained(path)
        rows = {}
        for direction, z, k, real in (("forward", zs, ks, xt), ("backward", zt, kt, xs)):
            step = m.forward if direction == "forward" else m.backward
            z = torch.cat([step(z[i:i + 2000], k[i:i + 2000]) for i in range(0, len(z), 2000)])
            if args.per_class:
                rows[f"{direction}_per_class"] = per_class(
                    enc, judges[direction], z, k, real, direction, args.data_dir, cache)
            rows[direction] = []
            for r in range(args.round_trips + 1):
                images = enc.decode(z).cpu()
                back, moved = move(enc, z, images)
                row = {"round_trips": r, "move": moved,
                       "accuracy": judges[direction].accuracy(images, k),
                       "fd": frechet_distance(judges[direction], real, images)}
                rows[direction].append(row)
                print(f"{path} {direction} after {r} round trips: move {moved:.3f}, accuracy "
                      f"{row['accuracy']:.4f}, Frechet {row['fd']:.3f}", flush=True)
                z = back
        result["maps"][path] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
