"""Entry-point discovery, exercised the way a third-party package would use it."""

import sys
import textwrap
import warnings
from importlib.metadata import EntryPoint

import pytest
import torch

import hjtranslate as hjt
from hjtranslate import registry
from hjtranslate.cli import main

THIRD_PARTY = textwrap.dedent('''
    import torch
    from hjtranslate.costs import Cost

    class QuarticCost(Cost):
        """L(v) = sum v_i^4 / 4, from a package hjtranslate knows nothing about."""
        name = "quartic"
        degree = 4.0

        def lagrangian(self, v):
            return (v ** 4).sum(-1) / 4

        def hamiltonian(self, p):
            return (p.abs() ** (4 / 3)).sum(-1) * 3 / 4

        def grad_hamiltonian(self, p):
            return torch.sign(p) * p.abs() ** (1 / 3)

    def make_quartic():
        return QuarticCost()

    class NotACost:
        pass
''')


@pytest.fixture
def fake_entry_points(tmp_path, monkeypatch):
    """Replace the entry points of one group by the real ones plus extra fake ones."""
    (tmp_path / "thirdparty_ot.py").write_text(THIRD_PARTY)
    (tmp_path / "broken_ot.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry.entry_points

    def install(group, extra):
        def fake(*, group: str):
            eps = list(real(group=group))
            return eps + [EntryPoint(n, v, group) for n, v in extra] if group == g else eps

        g = group
        monkeypatch.setattr(registry, "entry_points", fake)
        registry.clear_cache()

    yield install
    registry.clear_cache()
    sys.modules.pop("thirdparty_ot", None)


def test_builtins_are_discovered_through_entry_points():
    assert {"quadratic", "pnorm", "lp"} <= set(registry.plugins("cost"))
    assert {"mlp", "conditional"} <= set(registry.plugins("head"))
    assert {"identity", "vae"} <= set(registry.plugins("encoder"))
    assert registry.plugins("cost")["pnorm"].package.startswith("hjtranslate")


def test_third_party_cost_trains_without_touching_the_engine(fake_entry_points):
    fake_entry_points("hjtranslate.costs", [("quartic", "thirdparty_ot:QuarticCost")])
    cost = hjt.get_cost("quartic")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + 2
    m = hjt.fit(x, y, cost="quartic", steps=60, batch_size=128)
    assert m.cost_name == "quartic" and type(m.cost).__name__ == type(cost).__name__
    assert float(m.forward(x).mean()) > 1.0  # moved towards the target


def test_broken_plugin_is_named_and_skipped(fake_entry_points, capsys):
    fake_entry_points("hjtranslate.costs", [("broken", "broken_ot:Cost")])
    with pytest.warns(RuntimeWarning, match="broken.*failed to import.*needs libfoo"):
        table = registry.plugins("cost")
    assert "broken" not in table and "quadratic" in table
    with pytest.raises(registry.PluginError, match="The cost plugin 'broken' .*failed to import: "
                       "ImportError: needs libfoo. It was skipped"):
        hjt.get_cost("broken")
    assert main(["plugins"]) == 0
    assert "broken       skipped: cost plugin 'broken'" in capsys.readouterr().out


def test_the_plugins_table_names_a_skipped_plugin_once(fake_entry_points, capsys, recwarn):
    fake_entry_points("hjtranslate.costs", [("broken", "broken_ot:Cost")])
    assert main(["plugins"]) == 0  # the first look at the entry points: no note above the table
    assert not [w for w in recwarn if "Skipping" in str(w.message)]
    assert capsys.readouterr().out.count("skipped: cost plugin 'broken'") == 1


def test_two_plugins_with_one_name_make_that_name_an_error_only(fake_entry_points, capsys):
    fake_entry_points("hjtranslate.costs", [("quartic", "thirdparty_ot:QuarticCost"),
                                            ("quartic", "thirdparty_ot:make_quartic")])
    assert "quartic" not in registry.plugins("cost") and "pnorm" in registry.plugins("cost")
    with pytest.raises(registry.PluginError, match="Two cost plugins are named 'quartic'.*"
                       "thirdparty_ot:QuarticCost.*Uninstall one"):
        hjt.get_cost("quartic")
    assert hjt.get_cost("pnorm", p=3).p == 3  # the other costs keep working
    assert main(["plugins"]) == 0
    assert "quartic      unusable: Two cost plugins" in capsys.readouterr().out
    # a map that needs the name says why it cannot be built, not "not installed"
    m = hjt.fit(torch.randn(50, 2), torch.randn(50, 2), cost="pnorm", steps=2)
    m.cost_name = "quartic"
    with pytest.raises(registry.PluginError, match="Two cost plugins are named 'quartic'"):
        hjt.HJMap(**m.config_dict())


def test_a_third_party_plugin_with_a_built_in_name_is_skipped_not_the_built_in(fake_entry_points,
                                                                               capsys):
    """One stray package claiming 'quadratic' disabled every task and the shipped map."""
    fake_entry_points("hjtranslate.costs", [("quadratic", "thirdparty_ot:QuarticCost")])
    with pytest.warns(RuntimeWarning, match=r"Skipping cost plugin 'quadratic' "
                      r"\(thirdparty_ot:QuarticCost.*the name 'quadratic' is hjtranslate's own "
                      "cost: rename this entry point") as caught:
        table = registry.plugins("cost")
    assert caught[0].filename == __file__  # the user's line, not the registry's
    assert table["quadratic"].target == "hjtranslate_plugins.costs:QuadraticCost"
    assert hjt.HJMap.from_pretrained("models/digits-to-fashion/map").cost_name == "quadratic"
    assert main(["plugins"]) == 0
    assert "skipped: cost plugin 'quadratic' (thirdparty_ot" in capsys.readouterr().out


@pytest.mark.parametrize("target,what", [("thirdparty_ot:make_quartic", "a function"),
                                         ("thirdparty_ot", "a module"),
                                         ("thirdparty_ot:NotACost", "the class NotACost")])
def test_an_entry_point_that_is_not_a_plugin_class_is_named_and_skipped(fake_entry_points, target,
                                                                        what):
    fake_entry_points("hjtranslate.costs", [("odd", target)])
    with pytest.warns(RuntimeWarning, match=f"Skipping cost plugin 'odd'.*{what}.*not a subclass "
                      "of hjtranslate.costs.Cost"):
        table = registry.plugins("cost")
    assert "odd" not in table
    # recognising a cost instance goes through every plugin class: still fine
    m = hjt.fit(torch.randn(50, 2), torch.randn(50, 2), cost=hjt.get_cost("pnorm", p=3), steps=2)
    assert m.cost_name == "pnorm"


def test_runtime_registration_and_unknown_names():
    registry.register("cost", "quad2", type(hjt.get_cost("quadratic")))
    try:
        assert "quad2" in registry.plugins("cost")
        with pytest.raises(registry.PluginError, match="already registered"):
            registry.register("cost", "quad2", object)
        with pytest.raises(registry.PluginError, match=r"names an instance \(QuadraticCost\(\)\), "
                           "not a class: point the entry point at its class, "
                           "hjtranslate_plugins.costs:QuadraticCost"):
            registry.register("cost", "quad3", hjt.get_cost("quadratic"))
    finally:
        registry.unregister("cost", "quad2")
    with pytest.raises(registry.PluginError, match="Available heads: affine, conditional, mlp"):
        hjt.get_head("transformer", dim=2)


def test_plugins_command_lists_packages(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("quadratic", "pnorm", "mlp", "conditional", "identity", "vae"):
        assert name in out
    assert "hjtranslate 0.3.0" in out


def test_a_resumed_run_without_its_plugin_names_the_package(tmp_path, capsys):
    """--resume of a run whose cost plugin has gone says which package to install, as loading
    its saved map does, not just that the name is unknown."""
    class Quad2(type(hjt.get_cost("quadratic"))):
        pass

    registry.register("cost", "quad2", Quad2, package="s46pkg 0.1")
    run = ["train", "toy2d", "--steps", "2", "--n", "2000", "--eval-n", "500", "--output-dir",
           str(tmp_path / "run"), "--no-progress"]
    try:
        assert main([*run, "--cost", "quad2"]) == 0
    finally:
        registry.unregister("cost", "quad2")
    capsys.readouterr()
    assert main([*run, "--steps", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "needs the cost plugin 'quad2', which is not installed" in err and "(s46pkg)" in err
