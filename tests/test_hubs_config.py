"""hf: / tf: models on the profiler's side (no Docker): the `task` key's rules, the local folder a container
gets mounted, the server command, and the shipped hub presets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tui_profiler.config import PresetError, load_preset
from tui_profiler.config.hubs import container_model, task_problem


def test_task_rules() -> None:
    assert task_problem("hf:bert-base-uncased", "feature-extraction") is None
    assert "needs a task" in (task_problem("hf:bert-base-uncased", "") or "")
    assert "one of" in (task_problem("hf:x", "summarization") or "")
    assert task_problem("tf:/models/x", "") is None  # image-classification by default
    assert "only hf: and tf:" in (task_problem("resnet50", "feature-extraction") or "")


def test_a_preset_with_a_bad_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('model = "hf:some/model"\ntask = "translation"\n')
    with pytest.raises(PresetError, match="task"):
        load_preset(str(path))


def test_a_local_folder_is_mounted_read_only_and_a_hub_id_is_not(tmp_path: Path) -> None:
    (tmp_path / "my model").mkdir()
    model, mounts = container_model("hf:my model", tmp_path)
    assert model.startswith("hf:/models/my-model-") and mounts == [
        (str((tmp_path / "my model").resolve()), model[3:])
    ]
    assert container_model("hf:sentence-transformers/all-MiniLM-L6-v2", tmp_path) == (
        "hf:sentence-transformers/all-MiniLM-L6-v2",
        [],
    )
    assert container_model("tf:https://tfhub.dev/google/x/5", tmp_path)[1] == []


def test_hub_presets_validate_and_name_their_task() -> None:
    """The shipped hub presets: model and task, and the configuration beside them that `random` builds from."""
    from tui_profiler.config import load_preset
    from tui_profiler.sweep.targets import hub_model, server_command

    for name in ("all_minilm_l6_v2", "all_mpnet_base_v2"):
        preset = load_preset(name)
        model, mounts = hub_model(preset)
        assert preset.task == "feature-extraction" and model.startswith("hf:/models/")
        assert len(mounts) == 1 and (Path(mounts[0][0]) / "config.json").is_file()
        command: Any = server_command(preset)
        assert command[command.index("--task") + 1] == "feature-extraction"
    tf = load_preset("tfhub_mobilenet_v2")
    assert hub_model(tf) == ("tf:keras:MobileNetV2", [])
