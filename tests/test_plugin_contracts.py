"""A third-party cost or head that breaks its interface is named when a map is built: before
training, from the API and the command line, instead of a shape error deep in the loss, a map
trained on broadcast values, or one that saves and cannot be loaded."""

import math

import pytest
import torch
from hjtranslate_plugins.costs import QuadraticCost
from torch import nn

import hjtranslate as hjt
from hjtranslate import registry
from hjtranslate.cli import main
from hjtranslate.costs import Cost
from hjtranslate.heads import PotentialHead


class NoGradH(Cost):
    def lagrangian(self, v):
        return (v ** 2).sum(-1) / 2

    def hamiltonian(self, p):
        return (p ** 2).sum(-1) / 2


class WideH(QuadraticCost):
    def hamiltonian(self, p):
        return p ** 2 / 2  # (n, d), not (n,)


class NarrowGradH(QuadraticCost):
    def grad_hamiltonian(self, p):
        return p.sum(-1)


class NaNCost(QuadraticCost):
    def lagrangian(self, v):
        return (v ** 2).sum(-1) * float("nan")


class TensorConfig(QuadraticCost):
    def config(self):
        return {"scale": torch.tensor(1.0)}


class Tiny(PotentialHead):
    def __init__(self, dim, width=8, out=None):
        super().__init__()
        self.head_config = {"dim": dim, "width": width, "out": out}
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, 1))
        self.out = out

    def forward(self, x, t, k=None):
        u = self.net(torch.cat([x, t], 1))
        return u if self.out == "column" else u.expand(-1, 2) if self.out == "wide" else u[:, 0]


class BadMomentum(Tiny):
    def momentum(self, x, t, k=None):
        u = self.forward(x, t)
        return u, u[:, None]


class WrongMomentum(Tiny):
    def momentum(self, x, t, k=None):
        u = self.forward(x, t)
        return u, torch.zeros_like(x) + 1.0


class Forgetful(Tiny):
    def __init__(self, dim, width=8):
        super().__init__(dim, width)
        self.head_config = {}


class NoWeights(PotentialHead):
    def __init__(self, dim):
        super().__init__()
        self.head_config = {"dim": dim}

    def forward(self, x, t, k=None):
        return (x ** 2).sum(1) / 2


class DetachedH(QuadraticCost):
    def grad_hamiltonian(self, p):
        return p.detach()  # trains to nothing: the HJ loss cannot differentiate it


class NumpyH(QuadraticCost):
    def hamiltonian(self, p):
        return torch.from_numpy((p.numpy() ** 2).sum(-1) / 2)


class DetachedHead(Tiny):
    def forward(self, x, t, k=None):
        return super().forward(x.detach(), t, k)


class NoForward(PotentialHead):
    def __init__(self, dim):
        super().__init__()
        self.head_config = {"dim": dim}
        self.w = nn.Parameter(torch.ones(dim))


class HalfForgotten(Cost):
    """L = |v|^2 / 2 against H = |p|^2: every cost ratio came out half."""

    def lagrangian(self, v):
        return (v ** 2).sum(-1) / 2

    def hamiltonian(self, p):
        return (p ** 2).sum(-1)

    def grad_hamiltonian(self, p):
        return 2 * p


class WrongGradH(QuadraticCost):
    def grad_hamiltonian(self, p):
        return 3 * p


class WrongAction(QuadraticCost):
    def action(self, p):
        return (p ** 2).sum(-1)


class Concave(Cost):
    def lagrangian(self, v):
        return -(v ** 2).sum(-1) / 2

    def hamiltonian(self, p):
        return -(p ** 2).sum(-1) / 2

    def grad_hamiltonian(self, p):
        return -p


class RowsOnly(QuadraticCost):
    """Written for (n, d) displacements only: cost matrices pass (n, m, d)."""

    def lagrangian(self, v):
        return 0.5 * (v * v).sum(1)


class BatchMixing(Tiny):
    def forward(self, x, t, k=None):
        u = super().forward(x, t, k)
        return u - u.mean()


class NoDim(nn.Module):
    def __init__(self, d=2):
        super().__init__()
        self.head_config = {"d": d}
        self.w = nn.Parameter(torch.ones(d))


class Boom(QuadraticCost):
    def __init__(self):
        raise RuntimeError("license server unreachable")


class BoomHead(Tiny):
    def __init__(self, dim):
        raise AttributeError("no GPU kernel")


@pytest.fixture
def plugin():
    added = []

    def add(kind, cls):
        name = f"t_{cls.__name__.lower()}"
        registry.register(kind, name, cls, package="contract-test 0.1")
        added.append((kind, name))
        return name

    yield add
    for kind, name in added:
        registry.unregister(kind, name)


@pytest.mark.parametrize("cls,message", [
    (NoGradH, "does not implement grad_hamiltonian: a Cost subclass defines"),
    (WideH, r"hamiltonian of a \(3, 2\) batch must return shape \(3,\), got \(3, 2\)"),
    (NarrowGradH, r"grad_hamiltonian of a \(3, 2\) batch must return shape \(3, 2\), got \(3,\)"),
    (NaNCost, "lagrangian returns NaN or Inf near 0"),
    (TensorConfig, "config\\(\\) must return a dict of JSON values"),
    (DetachedH, "grad_hamiltonian's output does not depend on its input through autograd"),
    (NumpyH, "hamiltonian cannot be differentiated by autograd .*without .detach\\(\\), "
             ".item\\(\\) or numpy"),
    (HalfForgotten, r"lagrangian is not the Legendre dual of hamiltonian: L\(grad H\(p\)\) must "
                    r"equal p \. grad H\(p\) - H\(p\)"),
    (WrongGradH, r"grad_hamiltonian\(p\) is not the gradient of hamiltonian\(p\)"),
    (WrongAction, r"action\(p\) differs from p \. grad H\(p\) - H\(p\)"),
    (Concave, "hamiltonian is not convex"),
    (RowsOnly, r"pairwise\(x, y\) of batches of 2 and 3 points must return the \(2, 3\) cost "
               r"matrix, got \(2, 2\): the base class passes lagrangian the \(n, m, d\)"),
    (Boom, "failed to build: RuntimeError: license server unreachable"),
])
def test_a_broken_cost_is_named_before_training(plugin, cls, message, tmp_path, capsys):
    name = plugin("cost", cls)
    x = torch.randn(40, 2)
    with pytest.raises(registry.PluginError, match=f"The cost plugin '{name}' \\(contract-test "
                       f"0.1\\).*{message}"):
        hjt.fit(x, x + 1, cost=name, steps=2, output_dir=str(tmp_path / "api"))
    assert not (tmp_path / "api").exists()
    assert main(["train", "toy2d", "--cost", name, "--steps", "2", "--n", "500", "--output-dir",
                 str(tmp_path / "cli")]) == 2
    assert f"error: The cost plugin '{name}'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,cls,message", [
    ({"out": "column"}, Tiny, r"must return one potential per point, shape \(3,\) .* got \(3, 1\)"),
    ({"out": "wide"}, Tiny, r"got \(3, 2\)"),
    ({}, BadMomentum, r"momentum\(x, t, k\) must return \(u, grad_x u\) of shapes \(3,\) and "
                      r"\(3, 2\), got \(\(3,\), \(3, 1\)\)"),
    ({}, WrongMomentum, "momentum.* returns a gradient that differs from autograd"),
    ({"width": 16}, Forgetful, "does not rebuild the same parameters.*store every constructor argument"),
    ({}, NoWeights, "has no parameters to train"),
    ({}, DetachedHead, "does not depend on x"),
    ({}, NoForward, r"does not implement forward\(x, t, k\)"),
    ({}, BatchMixing, r"gives a point another potential alone .* than in a batch .*no batch "
                      r"statistics such as u - u.mean\(\)"),
    ({}, NoDim, "does not take dim: a head's constructor must take dim"),
    ({}, BoomHead, "failed to build: AttributeError: no GPU kernel"),
])
def test_a_broken_head_is_named_before_training(plugin, kwargs, cls, message, tmp_path):
    name = plugin("head", cls)
    x = torch.randn(40, 2)
    with pytest.raises(registry.PluginError, match=f"The head plugin '{name}' \\(contract-test "
                       f"0.1\\).*{message}"):
        hjt.fit(x, x + 1, head=name, head_kwargs=kwargs, steps=2)


def test_a_third_party_head_keeps_its_own_defaults(plugin, tmp_path):
    """fit's width/depth/quadratic defaults are for its own heads: a head with an argument of the
    same name keeps its default unless the caller gives one."""
    name = plugin("head", Tiny)
    x = torch.randn(40, 2)
    m = hjt.fit(x, x + 1, head=name, steps=2)
    assert m.head.head_config["width"] == 8
    assert hjt.fit(x, x + 1, head=name, head_kwargs={"width": 16}, steps=2).head.head_config["width"] == 16
    m.save_pretrained(tmp_path / "m")
    again = hjt.HJMap.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(again.forward(x[:5]), m.forward(x[:5]))
    # the command line: its own defaults too, and its options in --head-options
    run = ["train", "toy2d", "--head", name, "--steps", "2", "--n", "500", "--eval-n", "100",
           "--output-dir", str(tmp_path / "cli")]
    assert main(run) == 0
    assert hjt.HJMap.from_pretrained(tmp_path / "cli" / "map").head.head_config["width"] == 8
    assert main([*run, "--head-options", '{"width": 12}']) == 0
    assert hjt.HJMap.from_pretrained(tmp_path / "cli" / "map").head.head_config["width"] == 12


def test_the_encoder_record_must_be_json(tmp_path):
    x = torch.randn(40, 2)
    with pytest.raises(ValueError, match="encoder must be a dict of JSON values"):
        hjt.fit(x, x + 1, steps=2, encoder=hjt.get_encoder("identity"))
    with pytest.raises(ValueError, match="encoder must be a dict of JSON values .*got str"):
        hjt.fit(x, x + 1, steps=2, encoder="vae")


class NeedsAlpha(QuadraticCost):
    def __init__(self, alpha):
        self.alpha = float(alpha)

    def config(self):
        return {"alpha": self.alpha}


def test_a_cost_with_required_options_on_the_command_line(plugin, tmp_path, capsys):
    name = plugin("cost", NeedsAlpha)
    args = ["train", "toy2d", "--cost", name, "--steps", "2", "--n", "500", "--eval-n", "100",
            "--output-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "it takes alpha" in err and "--cost-options" in err and "Drop --p" not in err
    assert main([*args, "--p", "3"]) == 2
    assert "Drop --p" in capsys.readouterr().err
    assert main([*args, "--cost-options", "[2]"]) == 2
    assert "--cost-options must be a JSON object" in capsys.readouterr().err
    assert main([*args, "--cost-options", '{"alpha": 2}']) == 0
    saved = hjt.HJMap.from_pretrained(tmp_path / "map")
    assert saved.cost_name == name and saved.cost.alpha == 2.0
    # a resume keeps them (the same object, however spaced, is no change)
    assert main([*args, "--resume", "--steps", "3", "--cost-options", '{ "alpha" : 2 }']) == 0
    assert main([*args, "--resume", "--steps", "4", "--cost-options", '{"alpha": 3}']) == 2
    assert "differs from the run's" in capsys.readouterr().err
    m = hjt.fit(torch.randn(40, 2), torch.randn(40, 2), cost=hjt.get_cost(name, alpha=2), steps=2)
    assert m.cost_name == name and m.cost.alpha == 2.0


class Relativistic(Cost):
    """A bounded speed: L is infinite for |v| >= 1, by definition, not by a bug."""

    def lagrangian(self, v):
        s = (v ** 2).sum(-1)
        return torch.where(s < 1, 1 - (1 - s.clamp(max=1)).sqrt(), torch.full_like(s, float("inf")))

    def hamiltonian(self, p):
        return (1 + (p ** 2).sum(-1)).sqrt() - 1

    def grad_hamiltonian(self, p):
        return p / (1 + (p ** 2).sum(-1, keepdim=True)).sqrt()


class Scaled(QuadraticCost):
    def __init__(self, scale=1.0):
        self.scale = scale

    def config(self):
        return {"s": self.scale}  # not the constructor's name


class OffsetMomentum(Tiny):
    def momentum(self, x, t, k=None):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self.forward(x, t)
            (p,) = torch.autograd.grad(u.sum(), x)
        return u.detach() + 100, p


class Dropping(Tiny):
    def __init__(self, dim, width=8):
        super().__init__(dim, width)
        self.head_config = {"dim": dim, "width": width}
        self.drop = nn.Dropout(0.5)

    def forward(self, x, t, k=None):
        return self.net(self.drop(torch.cat([x, t], 1)))[:, 0]


class Lazy(PotentialHead):
    def __init__(self, dim, width=8):
        super().__init__()
        self.head_config = {"dim": dim, "width": width}
        self.net = nn.Sequential(nn.LazyLinear(width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, x, t, k=None):
        return self.net(torch.cat([x, t], 1))[:, 0]


class Squeezed(Tiny):
    def forward(self, x, t, k=None):
        return self.net(torch.cat([x, t], 1)).squeeze()  # () for one point


class OwnPairwise(QuadraticCost):
    """A lagrangian written for (n, d), its own pairwise for cost matrices."""

    def lagrangian(self, v):
        return torch.einsum("nd,nd->n", v, v) / 2

    def pairwise(self, x, y, t_f=1.0):
        return torch.cdist(x, y) ** 2 / (2 * t_f)


class Float32Only(QuadraticCost):
    """Its metric held as a float32 matrix: float64 inputs fail inside it."""

    def __init__(self):
        self.a = torch.eye(2)

    def lagrangian(self, v):
        return ((v @ self.a) * v).sum(-1) / 2

    def hamiltonian(self, p):
        return ((p @ self.a) * p).sum(-1) / 2

    def grad_hamiltonian(self, p):
        return p @ self.a

    def action(self, p):
        return self.hamiltonian(p)


def test_the_checks_do_not_refuse_legitimate_plugins(plugin, tmp_path):
    from hjtranslate.metrics import duality_gap

    x = torch.randn(60, 2) * 0.2
    for cls in (Squeezed, OwnPairwise, Float32Only):  # refused, or crashing, at first
        kind = "head" if cls is Squeezed else "cost"
        m = hjt.fit(x, x + 0.1, steps=2, **{kind: plugin(kind, cls)})
        assert math.isfinite(duality_gap(m, x, x + 0.1)["duality_gap"])
    m = hjt.fit(x, x + 0.1, cost=plugin("cost", Relativistic), steps=3)
    m.save_pretrained(tmp_path / "rel")
    assert hjt.HJMap.from_pretrained(tmp_path / "rel").cost_name == m.cost_name
    assert hjt.fit(x, x + 0.1, head=plugin("head", Lazy), steps=3).head.net[0].weight.shape == (8, 3)
    # building a map draws no random numbers beyond the head's own initialisation
    name = plugin("head", Dropping)
    for head, build in ((name, lambda: Dropping(2)), ("mlp", lambda: hjt.get_head("mlp", dim=2))):
        torch.manual_seed(0)
        build()
        alone = torch.rand(3)
        torch.manual_seed(0)
        hjt.HJMap(2, head=head)
        torch.testing.assert_close(torch.rand(3), alone)


def test_the_checks_name_what_they_missed_before(plugin):
    x = torch.randn(40, 2)
    name = plugin("cost", Scaled)
    with pytest.raises(registry.PluginError, match=r"config\(\) returns \{'s': 1.0\}, which does "
                       "not rebuild the cost .*takes scale"):
        hjt.fit(x, x + 1, cost=name, steps=2)
    name = plugin("head", OffsetMomentum)
    with pytest.raises(registry.PluginError, match="returns a u that differs from forward"):
        hjt.fit(x, x + 1, head=name, steps=2)


def test_a_saved_encoder_record_of_any_kind_still_loads(tmp_path):
    import json

    m = hjt.fit(torch.randn(40, 2), torch.randn(40, 2), steps=2)
    m.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "encoder": "enc3"}))
    assert hjt.HJMap.from_pretrained(tmp_path / "m").encoder_config == "enc3"


def test_plugin_options_that_disagree_or_change_under_a_resume(tmp_path, capsys):
    run = ["train", "toy2d", "--steps", "2", "--n", "500", "--eval-n", "100",
           "--output-dir", str(tmp_path / "r"), "--cost", "pnorm"]
    assert main([*run, "--p", "4", "--cost-options", '{"p": 3}']) == 2
    assert "--p 4.0 and --cost-options p=3 disagree" in capsys.readouterr().err
    assert main([*run, "--width", "8", "--head-options", '{"width": 16}']) == 2
    assert "--head-options and --width disagree on width" in capsys.readouterr().err
    assert main([*run, "--p", "3", "--head-options", '{"dim": 3}']) == 2
    assert "--head-options dim: the data sets it" in capsys.readouterr().err
    assert main([*run, "--cost-options", '{"p": 3}']) == 0
    # the checkpoint was trained for p = 3: a resume under another exponent is refused, however
    # it is given
    for extra, message in ((["--p", "4"], "--p 4.0 and --cost-options p=3 disagree"),
                           (["--cost-options", '{"p": 4}'], "differs from the run's")):
        assert main([*run, "--resume", "--steps", "4", *extra]) == 2
        assert message in capsys.readouterr().err
    x = torch.randn(60, 2)
    hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=3), steps=2, output_dir=str(tmp_path / "api"))
    with pytest.raises(ValueError, match=r"were trained for the cost pnorm \{\"p\": 3.0\}, not "
                       r"pnorm \{\"p\": 4.0\}"):
        hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=4), steps=4,
                output_dir=str(tmp_path / "api"), resume=True)


def test_head_options_override_a_tasks_own_defaults_and_dataset_names_stay_names(
        tmp_path, monkeypatch, capsys):
    """A task's own head default (gaussians' quadratic gain) gives way to --head-options; a
    typed --quadratic-gain that disagrees is refused. toy2d's --target names a dataset even
    where a folder of that name exists: recorded as typed, so the run resumes."""
    import json

    run = ["train", "gaussians", "--dim", "2", "--n", "300", "--eval-n", "100", "--steps", "2",
           "--batch-size", "32", "--no-progress", "--output-dir", str(tmp_path / "g")]
    assert main([*run, "--head-options", '{"quadratic_gain": 5}']) == 0
    saved = json.loads((tmp_path / "g" / "map" / "config.json").read_text())
    assert saved["head_kwargs"]["quadratic_gain"] == 5
    assert main([*run, "--quadratic-gain", "2", "--head-options", '{"quadratic_gain": 5}']) == 2
    assert "disagree on quadratic_gain" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    toy = ["train", "toy2d", "--target", "moons", "--n", "500", "--eval-n", "100",
           "--output-dir", "moons", "--no-progress"]
    assert main([*toy, "--steps", "2"]) == 0
    assert json.loads((tmp_path / "moons" / "config.json").read_text())["target"] == "moons"
    assert main([*toy, "--steps", "3", "--resume"]) == 0


class Kinked(Tiny):
    def __init__(self, dim, width=8, out=None):
        super().__init__(dim, width, out)
        self.net[1] = nn.ReLU()


def test_a_piecewise_linear_head_is_warned_about(plugin, recwarn):
    x = torch.randn(40, 2)
    with pytest.warns(UserWarning, match="zero second derivative in x .* ReLU .* smooth activation"):
        hjt.fit(x, x + 1, head=plugin("head", Kinked), steps=2)
    hjt.fit(x, x + 1, head=plugin("head", Tiny), steps=2)
    hjt.HJMap(2, head="mlp")
    hjt.HJMap(2, head="affine")
    assert not [w for w in recwarn if "second derivative" in str(w.message)]


class CubicL(Cost):
    """|v|^3 / 3 with the base class's degree (2) left in place."""

    def lagrangian(self, v):
        return v.norm(dim=-1) ** 3 / 3

    def hamiltonian(self, p):
        return p.norm(dim=-1) ** 1.5 * 2 / 3

    def grad_hamiltonian(self, p):
        return p * p.norm(dim=-1, keepdim=True) ** -0.5


class BadValues(QuadraticCost):
    def __init__(self, weights=(1.0, 1.0)):
        self.weights = list(weights)  # an int is not iterable: the plugin's own TypeError


def test_a_cost_of_another_degree_is_warned_about_and_a_refused_value_is_one_line(
        plugin, tmp_path, capsys):
    x = torch.randn(40, 2)
    with pytest.warns(RuntimeWarning, match="homogeneous of degree 3, not 2: set the class "
                      "attribute degree"):
        hjt.fit(x, x + 1, cost=plugin("cost", CubicL), steps=1)
    name = plugin("cost", BadValues)
    assert main(["train", "toy2d", "--cost", name, "--cost-options", '{"weights": 5}', "--steps",
                 "2", "--n", "500", "--output-dir", str(tmp_path / "cli")]) == 2
    assert (f"error: The cost plugin '{name}' (contract-test 0.1) could not be built with "
            "{'weights': 5}: "  # the package whose check it was
            "TypeError: 'int' object is not iterable. Check the values of --cost-options"
            ) in capsys.readouterr().err


def test_an_encoder_in_a_pipeline_is_checked_when_the_pipeline_is_built():
    from hjtranslate.encoders import Encoder
    from hjtranslate.pipeline import TranslationPipeline

    class Flat(Encoder):
        latent_dim = 4

        def encode(self, x):
            return x.reshape(len(x), -1)[:, :4]

        def decode(self, z):
            return torch.zeros(len(z), 784)  # flat pixels, not (n, 1, 28, 28) images

    class NoDim(Flat):
        latent_dim = None

    class NoDecode(Encoder):
        latent_dim = 4

        def encode(self, x):
            return x.reshape(len(x), -1)[:, :4]

    class Linear64(Encoder):  # float64 weights, a decode that builds a graph: fine
        latent_dim = 4

        def __init__(self):
            self.w = torch.nn.Parameter(torch.randn(784, 4, dtype=torch.float64) / 28)

        def encode(self, x):
            return x.reshape(len(x), -1).double() @ self.w

        def decode(self, z):
            return torch.sigmoid(z @ self.w.T).reshape(len(z), 1, 28, 28)

    class Wide(Linear64):  # latents wider than its latent_dim: the map blamed "x" on a call
        def encode(self, x):
            return torch.cat([super().encode(x)] * 2, 1)

    pipe = TranslationPipeline(Linear64(), hjt.HJMap(4).double())
    images = pipe(torch.rand(2, 1, 28, 28), classes=0, output_type="np").images
    assert images.shape == (2, 28, 28, 1)
    with pytest.raises(NotImplementedError, match="The Linear64 encoder cannot be saved"):
        pipe.vae.save_pretrained("unused")  # named by its class, not the base's 'encoder'
    m = hjt.HJMap(4)
    for encoder, message in ((Flat(), r"decode of latents \(2, 4\) must return grey images of "
                              r"shape \(2, 1, 28, 28\).*got \(2, 784\)"),
                             (NoDim(), "does not set latent_dim"),
                             (NoDecode(), "does not implement decode")):
        with pytest.raises(registry.PluginError, match=message):
            TranslationPipeline(encoder, m)
    with pytest.raises(registry.PluginError, match=r"encode of grey images \(2, 1, 28, 28\) must "
                       r"return flat latents of shape \(2, 4\) \(its latent_dim\), got \(2, 8\)"):
        TranslationPipeline(Wide(), hjt.HJMap(4).double())


def test_exact_ot_with_a_cost_infinite_off_its_domain():
    """Pairs out of a bounded-speed cost's reach stay unused; with no plan avoiding them the
    exact cost is infinite and the ratios to it NaN (the evaluation crashed after training)."""
    from hjtranslate.metrics import evaluate_map, exact_ot_cost

    g = torch.Generator().manual_seed(0)
    x = 0.2 * torch.randn(60, 2, generator=g)
    y = x.flip(0) + 0.3
    cost = Relativistic()
    assert bool(torch.isinf(cost.pairwise(x, y)).any())  # some pairs out of reach
    near = exact_ot_cost(x, y, cost)
    assert 0 < near <= float(cost.cost(x, x + 0.3).mean()) + 1e-9  # the shift is a plan in reach
    assert exact_ot_cost(x, y + 5, cost) == float("inf")
    with pytest.raises(ValueError, match="NaN or infinite values"):
        exact_ot_cost(x, y * float("nan"), cost)
    m = hjt.HJMap(2, cost="quadratic")
    m.cost = cost  # a fresh map near the identity, priced with the bounded cost
    out = evaluate_map(m, x, y + 5, exact_n=60, energy_n=60)
    assert out["exact_ot_cost"] == float("inf")
    assert math.isnan(out["cost_ratio"]) and math.isnan(out["cost_ratio_extrapolated"])


def test_cards_and_env_name_the_plugin_packages_a_map_needs(plugin, tmp_path, capsys):
    name = plugin("cost", CubicL)
    x = torch.randn(40, 2)
    with pytest.warns(RuntimeWarning, match="homogeneous of degree 3"):
        m = hjt.fit(x, x + 1, cost=name, steps=1)
    m.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert (f"- needs the cost plugin `{name}` (`pip install contract-test` (saved with "
            "contract-test 0.1))") in card
    hjt.fit(x, x + 1, steps=1).save_pretrained(tmp_path / "own")
    assert "- needs" not in (tmp_path / "own" / "README.md").read_text()
    assert main(["env"]) == 0
    assert f"plugins from other packages: contract-test 0.1 (cost {name})" in capsys.readouterr().out


class TinyV2(Tiny):
    """Tiny as a later release of its package: one more layer."""

    def __init__(self, dim, width=8, out=None):
        super().__init__(dim, width, out)
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, 1))


def test_weights_of_an_older_plugin_release_name_both_versions(tmp_path):
    registry.register("head", "t_release", Tiny, package="contract-test 0.1")
    try:
        x = torch.randn(40, 2)
        hjt.fit(x, x + 1, head="t_release", steps=1).save_pretrained(tmp_path / "m")
    finally:
        registry.unregister("head", "t_release")
    registry.register("head", "t_release", TinyV2, package="contract-test 0.2")
    try:
        with pytest.raises(hjt.CheckpointError, match=r"do not match the architecture .*strict "
                           r"loading.*head.net.2.*the head plugin "
                           r"'t_release' was saved with contract-test 0.1 and contract-test 0.2 "
                           r"is installed: install the version it was saved with"):
            hjt.HJMap.from_pretrained(tmp_path / "m")
    finally:
        registry.unregister("head", "t_release")


class WrongPower(Cost):
    """A p = 3 cost whose grad H has the exponent q - 1 instead of q - 2: equal at |p| = 1."""

    degree = 3.0

    def lagrangian(self, v):
        return v.norm(dim=-1) ** 3 / 3

    def hamiltonian(self, p):
        return p.norm(dim=-1) ** 1.5 / 1.5

    def grad_hamiltonian(self, p):
        return p.norm(dim=-1, keepdim=True) ** 0.5 * p


class BoundedMomentum(Cost):
    """Huber's L, whose dual H = |p|^2 / 2 is infinite beyond |p| = 1 (no verdict there)."""

    def lagrangian(self, v):
        n = v.norm(dim=-1)
        return torch.where(n <= 1, n ** 2 / 2, n - 0.5)

    def hamiltonian(self, p):
        n = (p * p).sum(-1)
        return torch.where(n <= 1, n / 2, torch.full_like(n, float("inf")))

    def grad_hamiltonian(self, p):
        return p


def test_the_legendre_check_sees_a_wrong_power_and_passes_a_bounded_domain(plugin):
    x = torch.randn(40, 3) * 0.2
    with pytest.raises(registry.PluginError, match="grad_hamiltonian.* is not the gradient"):
        hjt.HJMap(3, cost=plugin("cost", WrongPower))
    with pytest.raises(registry.PluginError, match=r"pairwise\(x, y\)\[i, j\] differs from "
                       r"cost\(x_i, y_j\)"):  # at d = 3 the 3 x 3 matrix had the right shape
        hjt.HJMap(3, cost=plugin("cost", RowsOnly))
    name = plugin("cost", BoundedMomentum)
    for d in (1, 2, 8):
        hjt.HJMap(d, cost=name)
    hjt.fit(x, x + 0.1, cost=name, steps=2)


def test_float32_only_costs_are_evaluated(plugin):
    from hjtranslate.metrics import certified_dual, evaluate_map

    x = torch.randn(60, 2) * 0.2
    m = hjt.fit(x, x + 0.1, cost=plugin("cost", Float32Only), steps=2)
    assert math.isfinite(certified_dual(m, x, x + 0.1))
    assert math.isfinite(evaluate_map(m, x, x + 0.1, exact_n=60, energy_n=60)["cost_ratio"])
