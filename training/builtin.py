"""Rebuild the built-in model from scratch: synthetic data → stage 0 → stage 1 → stage 2 → export.

One command runs it (``medvlm train builtin --out DIR``; config ``training/configs/builtin.yaml``).
Each stage writes ``DIR/stage<k>/final``; a stage whose final checkpoint exists is skipped and a
stage with an intermediate ``step-<n>`` checkpoint resumes from the latest one, so an interrupted
rebuild continues where it stopped. ``export_builtin`` writes the small committed parts (float16):
``parts.safetensors``, ``parts.json`` (with provenance) and ``adapter/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import build, save_resolved
from training.loop import Recipe, TrainResult
from training.recipes.dpo import DPOConfig, DPORecipe
from training.recipes.instruct_lora import ADAPTER_DIR, InstructLoraConfig, InstructLoraRecipe
from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe
from training.recipes.vision_pretrain import VisionPretrainConfig, VisionPretrainRecipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PhantomArgs:
    """Synthetic data for the rebuild (``medvlm phantoms``)."""

    n: int = 3000
    seed: int = 1
    size: int = 64

    def __post_init__(self) -> None:
        if self.n < 10 or self.size < 16:
            raise ValueError("PhantomArgs: need n >= 10 and size >= 16")


@dataclass(frozen=True, kw_only=True)
class MineArgs:
    """Preference mining before the optional DPO stage (:mod:`training.preferences`)."""

    split: str = "train"
    files: tuple[str, ...] = ("vqa", "probes")
    limit: int = 2000
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.split not in ("train", "val") or self.limit < 1 or self.batch_size < 1:
            raise ValueError("MineArgs: split must be train or val, limit and batch_size >= 1")


@dataclass(frozen=True, kw_only=True)
class BuiltinPipelineConfig:
    """The whole rebuild.

    Attributes:
        out_dir: working folder (``data/``, ``stage0/``, ``stage1/``, ``stage2/``, ``weights/``).
        data_dir: an existing phantoms folder; None generates one into ``out_dir/data``.
        data: phantom generation parameters (used when ``data_dir`` is None).
        stage0_data: when set, stage 0 trains on its own phantoms, generated with these parameters
            into ``out_dir/stage0_data`` (a different seed gives different patients): the vision
            tower learns from more images than the later stages need, while every later stage and
            the evaluation keep ``data``. None: stage 0 trains on ``data``'s train split too.
        version: version written into ``parts.json``.
        stage0: overrides of :class:`VisionPretrainConfig` (``out_dir``/``data_dir`` are set here).
        stage1: overrides of :class:`ProjectorAlignConfig`.
        stage2_curriculum: overrides of :class:`InstructLoraConfig` for LoRA stages run before
            stage 2, in order, into ``stage2a``, ``stage2b``, ...: the first starts the adapter
            (its ``lora`` settings count), each later one and then stage 2 continue it (e.g.
            existence questions alone, then side, then zone and lobe); empty: none.
        stage2: overrides of :class:`InstructLoraConfig`.
        dpo: overrides of :class:`DPOConfig` for an optional last stage (empty: none): stage 2's
            model answers closed questions of the train split, its wrong answers become preference
            pairs (``preferences.jsonl``; chosen = the reference answer), and DPO continues the adapter.
        dpo_mine: how those pairs are mined.
        weights_out: also copy the exported parts there (e.g. ``medvlm/builtin/weights``).
        start_from: a folder of trained parts with ``adapter/`` (the committed built-in weights, or
            a stage-2 checkpoint) to continue instead of training stages 0 and 1: the first
            curriculum stage (or stage 2) starts from its parts and continues its adapter. None:
            from scratch.
    """

    out_dir: str
    data_dir: str | None = None
    data: PhantomArgs = field(default_factory=PhantomArgs)
    stage0_data: PhantomArgs | None = None
    version: str = "0.1.0"
    stage0: dict[str, Any] = field(default_factory=dict)
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2_curriculum: tuple[dict[str, Any], ...] = ()
    stage2: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    dpo_mine: MineArgs = field(default_factory=MineArgs)
    weights_out: str | None = None
    start_from: str | None = None

    def __post_init__(self) -> None:
        if self.start_from is not None and not (Path(self.start_from) / "parts.json").is_file():
            raise ValueError(
                f"start_from: {self.start_from} holds no parts.json (not a folder of trained parts)"
            )
        if len(self.stage2_curriculum) > 26 or not all(isinstance(v, dict) for v in self.stage2_curriculum):
            raise ValueError("stage2_curriculum must be a list of at most 26 mappings of stage-2 settings")


def _latest_step(folder: Path) -> Path | None:
    steps = sorted(
        (p for p in folder.glob("step-*") if (p / "state.pt").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return steps[-1] if steps else None


def _run_stage(
    name: str, folder: Path, make: Callable[[dict[str, Any]], Recipe], values: dict[str, Any]
) -> Path:
    final = folder / "final"
    if (final / "state.pt").is_file():
        logger.info("%s: done already (%s)", name, final)
        return final
    latest = _latest_step(folder)
    if latest is not None and "resume_from" not in values:
        values = {**values, "resume_from": str(latest)}
    result: TrainResult = make(values).run()
    logger.info(
        "%s: %d steps, loss %.4f, %.2f samples/s",
        name,
        result.steps,
        result.final_loss,
        result.samples_per_second,
    )
    return result.checkpoint


def curriculum_stage_name(index: int) -> str:
    """``stage2a``, ``stage2b``, ... for the LoRA curriculum stages before stage 2.

    Raises:
        ValueError: more than 26 curriculum stages.
    """
    if not 0 <= index < 26:
        raise ValueError(f"stage2_curriculum: at most 26 stages, got index {index}")
    return f"stage2{chr(ord('a') + index)}"


def generate_phantoms(folder: Path, args: PhantomArgs) -> Path:
    """``folder`` holding phantoms made with ``args``, generated once (kept when already there)."""
    if not (folder / "manifest.json").is_file():
        from data_prep.phantoms.generate import generate

        generate(folder, n=args.n, seed=args.seed, size=args.size, dicom=False)
    return folder


def generate_data(cfg: BuiltinPipelineConfig) -> Path:
    """The phantoms folder to train on, generated once into ``out_dir/data`` when not given."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    return generate_phantoms(Path(cfg.out_dir) / "data", cfg.data)


def run_pipeline(cfg: BuiltinPipelineConfig) -> Path:
    """Run every stage and export the parts.

    Args:
        cfg: the pipeline config.

    Returns:
        The exported weights folder (``out_dir/weights``).
    """
    out = Path(cfg.out_dir)
    save_resolved(cfg, out)
    data = str(generate_data(cfg))
    common = {"data_dir": data}
    first: list[Path]
    if cfg.start_from is None:
        s0_data = str(generate_phantoms(out / "stage0_data", cfg.stage0_data)) if cfg.stage0_data else data
        s0 = _run_stage(
            "stage0",
            out / "stage0",
            lambda v: VisionPretrainRecipe(build(VisionPretrainConfig, v)),
            {**cfg.stage0, "data_dir": s0_data, "out_dir": str(out / "stage0")},
        )
        s1 = _run_stage(
            "stage1",
            out / "stage1",
            lambda v: ProjectorAlignRecipe(build(ProjectorAlignConfig, v)),
            {**cfg.stage1, **common, "out_dir": str(out / "stage1"), "init_from": str(s0)},
        )
        first, before_s2 = [s0, s1], s1
    else:
        logger.info("stages 0 and 1: continuing %s instead", cfg.start_from)
        before_s2 = Path(cfg.start_from)
        first = [before_s2]
    curriculum: list[Path] = []
    for index, values in enumerate(cfg.stage2_curriculum):
        name = curriculum_stage_name(index)
        before_s2 = _run_stage(
            name,
            out / name,
            lambda v: InstructLoraRecipe(build(InstructLoraConfig, v)),
            {**values, **common, "out_dir": str(out / name), "init_from": str(before_s2)},
        )
        curriculum.append(before_s2)
    s2 = _run_stage(
        "stage2",
        out / "stage2",
        lambda v: InstructLoraRecipe(build(InstructLoraConfig, v)),
        {**cfg.stage2, **common, "out_dir": str(out / "stage2"), "init_from": str(before_s2)},
    )
    last = s2
    stages = [str(p) for p in (*first, *curriculum, s2)]
    if cfg.dpo:
        lm_dir = cfg.dpo.get("lm_dir") or cfg.stage2.get("lm_dir")
        preferences = mine_once(s2, Path(data), cfg.dpo_mine, out / "preferences.jsonl", lm_dir=lm_dir)
        last = _run_stage(
            "dpo",
            out / "dpo",
            lambda v: DPORecipe(build(DPOConfig, v)),
            {
                **cfg.dpo,
                **common,
                "out_dir": str(out / "dpo"),
                "init_from": str(s2),
                "preferences": str(preferences),
            },
        )
        stages.append(str(last))
    provenance = {
        "data": {"n": cfg.data.n, "seed": cfg.data.seed, "size": cfg.data.size} if not cfg.data_dir else data,
        **(
            {"stage0_data": dataclasses.asdict(cfg.stage0_data)}
            if cfg.stage0_data and cfg.start_from is None
            else {}
        ),
        "stages": stages,
    }
    weights = export_builtin(last, out / "weights", version=cfg.version, provenance=provenance)
    if cfg.weights_out:
        target = Path(cfg.weights_out)
        target.mkdir(parents=True, exist_ok=True)
        for item in weights.iterdir():
            dest = target / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dest)
    return weights


def mine_once(checkpoint: Path, data: Path, args: MineArgs, path: Path, *, lm_dir: str | None = None) -> Path:
    """Write ``path`` (preference pairs from ``checkpoint``'s wrong answers) unless it exists already.

    Args:
        checkpoint: the stage-2 checkpoint (parts and ``adapter/``).
        data: the phantoms folder.
        args: what to ask.
        path: the preference JSONL.
        lm_dir: the language model the stages were trained on; None: the converted SmolLM2.

    Raises:
        ValueError: the model answered every question right (nothing to prefer).
    """
    if path.is_file():
        logger.info("preferences: done already (%s)", path)
        return path
    from training.eval.runner import load_answerer
    from training.preferences import closed_questions, mine_preferences, write_preferences

    model, adapter = str(checkpoint), None
    if lm_dir:
        from medvlm.builtin.assemble import assemble

        model, adapter = str(path.parent / "mine-model"), str(checkpoint / ADAPTER_DIR)
        assemble(Path(lm_dir), checkpoint, Path(model))
    examples = closed_questions(data, split=args.split, files=args.files, limit=args.limit, seed=args.seed)
    mined = mine_preferences(load_answerer(model, adapter, batch_size=args.batch_size), data, examples)
    if not mined.pairs:
        raise ValueError(f"preferences: all {mined.asked} answers of {checkpoint} were right; no pairs")
    write_preferences(mined.pairs, path)
    logger.info("preferences: %d wrong of %d asked %s", len(mined.pairs), mined.asked, mined.per_template)
    return path


def export_builtin(checkpoint: Path, weights_dir: Path, *, version: str, provenance: dict[str, Any]) -> Path:
    """Write the committed form of the built-in model's trained parts, in float16.

    Args:
        checkpoint: a stage-2 (or DPO) checkpoint with ``parts.safetensors``, ``parts.json``, ``adapter/``.
        weights_dir: destination (created).
        version: written into ``parts.json``.
        provenance: written into ``parts.json`` ``extra``.

    Returns:
        ``weights_dir``.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from medvlm.builtin import PartsSpec

    weights_dir.mkdir(parents=True, exist_ok=True)
    parts = load_file(str(checkpoint / "parts.safetensors"))
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in parts.items()},
        str(weights_dir / "parts.safetensors"),
    )
    spec = PartsSpec.from_file(checkpoint / "parts.json")
    spec = dataclasses.replace(spec, version=version, synthetic_only=True, extra=provenance)
    (weights_dir / "parts.json").write_text(spec.to_json())
    adapter_in, adapter_out = checkpoint / ADAPTER_DIR, weights_dir / ADAPTER_DIR
    if (adapter_in / "adapter_model.safetensors").is_file():
        adapter_out.mkdir(exist_ok=True)
        lora = load_file(str(adapter_in / "adapter_model.safetensors"))
        save_file(
            {k: v.to(torch.float16).contiguous() for k, v in lora.items()},
            str(adapter_out / "adapter_model.safetensors"),
        )
        config = json.loads((adapter_in / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "medvlm-builtin"
        (adapter_out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return weights_dir
