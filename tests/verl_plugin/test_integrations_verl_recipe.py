"""The verl command line in docs/integrations.md composes with verl 0.9.1's own config and selects ConSPO."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

verl = pytest.importorskip("verl")
pytestmark = pytest.mark.verl

from hydra import compose, initialize_config_dir  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402
from verl.utils.import_utils import load_extern_object  # noqa: E402

from conspo.integrations import verl as plugin  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def recipe_overrides() -> list[str]:
    text = DOCS.read_text()
    block = re.search(
        r"<!-- verl-recipe:begin -->\s*```bash\n(.*?)```\s*<!-- verl-recipe:end -->", text, re.S
    )
    assert block, "docs/integrations.md lost its verl recipe block"
    tokens = shlex.split(block.group(1).replace("\\\n", " "))
    assert tokens[:2] == ["export", "VERL_USE_EXTERNAL_MODULES=conspo.integrations.verl"]
    start = tokens.index("verl.trainer.main_ppo") + 1
    return tokens[start:]


def test_docs_recipe_composes_with_verls_config():
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="ppo_trainer", overrides=recipe_overrides())
    # verl's own pre-flight checks (batch sizes vs GPUs, loss modes, dynamic batch size, ...).
    validate_config(
        config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )
    assert not need_reference_policy(config) and not need_critic(config)
    assert config.algorithm.adv_estimator == "conspo"
    assert config.trainer.v1.trainer_mode == "conspo_sync"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "conspo_seq"
    assert config.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-mean"
    # One optimizer step per batch: the exactness condition.
    assert config.actor_rollout_ref.actor.ppo_mini_batch_size == config.data.train_batch_size
    assert config.actor_rollout_ref.actor.ppo_epochs == 1
    options = plugin.VerlConSPOOptions.from_config(config.algorithm)
    assert (options.tau, options.margin, options.margin_max, options.margin_warmup) == (
        10.0,
        "cosine",
        0.01,
        0.3,
    )
    options.build_objective()
    reward_path = config.reward.custom_reward_function.path
    assert load_extern_object(reward_path, config.reward.custom_reward_function.name) is plugin.compute_score
