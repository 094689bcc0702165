"""Tests of the recipe schema: defaults, the shipped recipes, --set overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgma_cli.config._base import tomllib
from sgma_cli.config.model import ARCHITECTURE_FIELDS, ModalitySpec, SGMAConfig
from sgma_cli.config.recipe import (
    ModelRecipe,
    Recipe,
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_to_toml,
)
from sgma_cli.errors import RecipeError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class TestShippedRecipes:
    @pytest.mark.parametrize("name", ["potsdam", "dfc2023", "deliver"])
    def test_paper_settings(self, name: str) -> None:
        r = load_recipe(RECIPES / f"{name}.toml")
        assert r.model.backbone == "pvt_v2_b2" and r.model.fusion == "sgf"
        assert (r.optim.lr, r.optim.eps, r.optim.weight_decay) == (6e-5, 1e-8, 1e-2)
        assert (
            r.schedule.epochs,
            r.schedule.warmup_epochs,
            r.schedule.warmup_ratio,
            r.schedule.power,
        ) == (200, 10, 0.1, 0.9)
        assert (r.train.lambda_sgf, r.train.lambda_mas, r.train.mas) == (2.0, 1.0, True)
        assert (r.model.sp_heads, r.model.rp_heads, r.model.mp_kernels) == (8, 4, (11, 7, 3))
        assert r.data.crop_size == {"potsdam": 512, "dfc2023": 512, "deliver": 1024}[name]

    def test_sample_recipe_is_small(self) -> None:
        r = load_recipe(RECIPES / "sample.toml")
        assert r.model.backbone.startswith("test_") and r.train.mas and r.model.fusion == "sgf"

    def test_round_trip(self) -> None:
        r = load_recipe(RECIPES / "potsdam.toml", ["optim.lr=1e-4"])
        again = Recipe.model_validate(tomllib.loads(recipe_to_toml(r)))
        assert again == r


class TestOverrides:
    def test_typed_values(self) -> None:
        assert parse_override("optim.lr=1e-4") == (["optim", "lr"], 1e-4)
        assert parse_override("train.mas=false") == (["train", "mas"], False)
        assert parse_override("data.scale=[1, 2]") == (["data", "scale"], [1, 2])
        assert parse_override("data.dir=/data/potsdam") == (["data", "dir"], "/data/potsdam")

    def test_set_wins(self) -> None:
        r = load_recipe(
            RECIPES / "potsdam.toml",
            ["optim.lr=1e-4", 'model.fusion="sum"', "train.modality_dropout=0.5"],
        )
        assert (r.optim.lr, r.model.fusion, r.train.modality_dropout) == (1e-4, "sum", 0.5)

    def test_nested_copy(self) -> None:
        raw = {"optim": {"lr": 1.0}}
        out = apply_overrides(raw, ["optim.eps=2.0"])
        assert raw == {"optim": {"lr": 1.0}} and out == {"optim": {"lr": 1.0, "eps": 2.0}}

    def test_bad_syntax(self) -> None:
        with pytest.raises(RecipeError, match="expected KEY=VALUE"):
            load_recipe(None, ["optim.lr"])
        with pytest.raises(RecipeError, match="optim.lr is a value, not a table"):
            load_recipe(RECIPES / "potsdam.toml", ["optim.lr.x=1"])


class TestErrors:
    def test_unknown_key_did_you_mean(self, tmp_path: Path) -> None:
        path = tmp_path / "r.toml"
        path.write_text("[optim]\nlearning_rate = 1e-3\nlr = 1e-4\n[train]\nlamda_sgf = 2\n")
        with pytest.raises(RecipeError, match=r"r.toml: unknown key optim.learning_rate"):
            load_recipe(path)
        path.write_text("[train]\nlamda_sgf = 2\n")
        with pytest.raises(RecipeError, match=r"did you mean train.lambda_sgf\?"):
            load_recipe(path)

    def test_wrong_type_and_range(self, tmp_path: Path) -> None:
        with pytest.raises(RecipeError, match=r"--set optim.lr: .*greater than 0 \(got -1\)"):
            load_recipe(None, ["optim.lr=-1"])
        with pytest.raises(RecipeError, match=r"model.fusion: .*'sgf', 'sum' or 'mean'"):
            load_recipe(None, ["model.fusion='concat'"])
        with pytest.raises(RecipeError, match=r"data.crop_size: .*multiple of 32"):
            load_recipe(None, ["data.crop_size=100"])
        with pytest.raises(RecipeError, match=r"train.mas: .*boolean"):
            load_recipe(None, ["train.mas='maybe'"])
        with pytest.raises(RecipeError, match=r"model.mp_kernels: .*must be odd and positive"):
            load_recipe(None, ["model.mp_kernels=[4]"])

    def test_nothing_to_learn(self) -> None:
        with pytest.raises(RecipeError, match="nothing to learn"):
            load_recipe(None, ["train.lambda_sgf=0", "train.mas=false"])

    def test_bad_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text("[optim\n")
        with pytest.raises(RecipeError, match="bad.toml: not valid TOML"):
            load_recipe(path)
        with pytest.raises(RecipeError, match="file not found"):
            load_recipe(tmp_path / "missing.toml")


class TestModelTable:
    MODALITIES = (ModalitySpec("rgb", 3), ModalitySpec("dsm", 1))

    def test_keys_are_the_architecture_fields(self) -> None:
        assert set(ModelRecipe.model_fields) == {*ARCHITECTURE_FIELDS, "pretrained"}

    def test_defaults_are_the_model_configs(self) -> None:
        config = ModelRecipe().to_config(self.MODALITIES, 6)
        assert config == SGMAConfig(self.MODALITIES, 6)
        assert config.backbone == "pvt_v2_b2" and config.mp_kernels == (11, 7, 3)

    def test_every_key_reaches_the_config(self) -> None:
        r = load_recipe(
            None,
            [
                "model.backbone='test_resnet'",
                "model.fusion='mean'",
                "model.stem='learned'",
                "model.sp_heads=2",
                "model.rp_heads=1",
                "model.mp_kernels=[5, 3]",
                "model.head_dim=64",
                "model.head_dropout=0.25",
                "model.mas_granularity='batch'",
                "model.prototypes='softmax'",
            ],
        )
        config = r.model.to_config(self.MODALITIES, 4)
        assert config.to_dict() == {
            "modalities": [{"name": "rgb", "bands": 3}, {"name": "dsm", "bands": 1}],
            "num_classes": 4,
            "backbone": "test_resnet",
            "fusion": "mean",
            "stem": "learned",
            "sp_heads": 2,
            "rp_heads": 1,
            "mp_kernels": [5, 3],
            "head_dim": 64,
            "head_dropout": 0.25,
            "mas_granularity": "batch",
            "prototypes": "softmax",
        }
