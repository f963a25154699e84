"""The shared recipe machinery: run arguments, data order, checkpoints, and the training loop.

A recipe subclasses :class:`Recipe` and supplies the model (``build``), the loss of a list of example
indices (``loss``) and what to export beside each checkpoint (``export``). The loop runs under
``accelerate`` (one CPU process, or DDP/FSDP when started with ``accelerate launch``): every process
draws the same global batch of indices from :class:`IndexStream` and keeps its own slice.

Resuming is exact: a checkpoint holds the trainable weights, optimizer and scheduler state, the step,
the data-order cursor and every RNG state, so N uninterrupted steps equal k steps + resume + N-k.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.config import save_resolved

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), per ``/proc/cpuinfo`` flags.

    On AVX2-only CPUs bfloat16 autocast is emulated: a stage-1 step that took 2.5 s in float32 had not
    finished 10 steps in 13 minutes under autocast on a 2-core AMD EPYC (AVX2) machine.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True, kw_only=True)
class OptimArgs:
    """AdamW with linear warm-up then a cosine or constant schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("OptimArgs: need lr > 0, warmup_steps >= 0, grad_clip >= 0")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"OptimArgs.schedule: {self.schedule!r} is not cosine|constant")


@dataclass(frozen=True, kw_only=True)
class RunArgs:
    """Fields every recipe shares.

    Attributes:
        out_dir: checkpoints go to ``out_dir/step-<n>`` and ``out_dir/final``.
        data_dir: a folder written by ``medvlm phantoms`` (training reads its ``train`` split).
        seed: seeds initialisation, data order and dropout.
        max_steps: optimizer steps.
        batch_size: examples per process per micro-step.
        grad_accum: micro-steps per optimizer step.
        log_every: log and append to ``metrics.jsonl`` every this many steps.
        save_every: also checkpoint every this many steps (0: only at the end).
        resume_from: a checkpoint folder to continue from.
        num_threads: ``torch.set_num_threads`` (0 leaves the default).
        mixed_precision: ``"bf16"`` runs forward passes under bfloat16 autocast (weights, optimizer
            state and checkpoints stay float32); about 1.3x faster per LM step on these AVX-512
            BF16 CPUs; ``"no"`` is plain float32.
        optim: optimizer settings.
    """

    out_dir: str
    data_dir: str
    seed: int = 0
    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    log_every: int = 10
    save_every: int = 0
    resume_from: str | None = None
    num_threads: int = 0
    mixed_precision: Literal["no", "bf16"] = "no"
    optim: OptimArgs = field(default_factory=OptimArgs)

    def __post_init__(self) -> None:
        if not self.out_dir or not self.data_dir:
            raise ValueError("out_dir and data_dir are required")
        if self.max_steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("need max_steps >= 0, batch_size >= 1, grad_accum >= 1")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision: {self.mixed_precision!r} is not no|bf16")


@dataclass
class IndexStream:
    """An endless, seeded stream of example indices: a fresh permutation per epoch.

    Attributes:
        n: number of examples.
        seed: seed of the permutations.
        epoch: current epoch (state).
        cursor: position within the epoch's permutation (state).
    """

    n: int
    seed: int
    epoch: int = 0
    cursor: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("IndexStream needs at least one example")

    def _perm(self) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order: list[int] = torch.randperm(self.n, generator=generator).tolist()
        return order

    def take(self, k: int) -> list[int]:
        """The next ``k`` indices (crossing epochs when needed)."""
        out: list[int] = []
        while len(out) < k:
            perm = self._perm()
            chunk = perm[self.cursor : self.cursor + k - len(out)]
            out += chunk
            self.cursor += len(chunk)
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        """Position in the stream."""
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position; refuses a stream over a different dataset."""
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"resuming a data stream over n={state['n']} seed={state['seed']} with n={self.n}"
            )
        self.epoch, self.cursor = state["epoch"], state["cursor"]


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states of this process."""
    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore states from :func:`rng_states`."""
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine to 10% or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainResult:
    """What a run did.

    Attributes:
        steps: optimizer steps completed (in total, counting resumed ones).
        final_loss: mean loss of the last logged window.
        seconds: wall time of this process's loop.
        samples_per_second: examples per second over all processes (this run's steps only).
        checkpoint: the final checkpoint folder.
    """

    steps: int
    final_loss: float
    seconds: float
    samples_per_second: float
    checkpoint: Path


def param_groups(model: torch.nn.Module, lr: float, scales: dict[str, float]) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters: one at ``lr``, one per scaled name part.

    Args:
        model: the model, trainable parameters marked ``requires_grad``.
        lr: the base learning rate.
        scales: ``{part of a parameter name: multiplier}``; the first key the name contains wins.

    Returns:
        Non-empty groups only, the base group first (empty when nothing is trainable).
    """
    base: list[Any] = []
    scaled: dict[str, list[Any]] = {key: [] for key in scales}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = next((x for x in scales if x in name), None)
        (base if key is None else scaled[key]).append(param)
    groups = [{"params": base, "lr": lr}] if base else []
    groups += [{"params": ps, "lr": lr * scales[x]} for x, ps in scaled.items() if ps]
    return groups


class Recipe(abc.ABC):
    """``setup`` / ``train`` / ``cleanup`` around a model, an index-addressed dataset and a loss."""

    def __init__(self, cfg: RunArgs) -> None:
        self.cfg = cfg
        self.step = 0
        self._accelerator: Accelerator | None = None
        self._model: Any = None
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._stream: IndexStream | None = None

    # --- what a recipe supplies -------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> tuple[torch.nn.Module, int]:
        """Build the model (trainable parameters marked ``requires_grad``) and load the data.

        Returns:
            The model and the number of training examples.
        """

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name part (default: none, one rate for all).

        A trainable parameter whose name contains a returned key (``"vision_tower."``) is optimised at
        ``optim.lr`` times that scale (its own AdamW group, same schedule and weight decay).
        """
        return {}

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, indices: list[int]) -> torch.Tensor:
        """Scalar loss of the examples at ``indices`` (``model`` may be DDP/FSDP-wrapped)."""

    def export(self, model: torch.nn.Module, folder: Path) -> None:  # noqa: B027 - optional hook
        """Write recipe-specific artefacts beside a checkpoint (rank 0 only, unwrapped model)."""

    # --- the loop ---------------------------------------------------------------------------
    @property
    def accelerator(self) -> Accelerator:
        """The run's accelerator (after ``setup``)."""
        if self._accelerator is None:
            raise RuntimeError("call setup() first")
        return self._accelerator

    @property
    def learning_rates(self) -> list[float]:
        """The current learning rate of each optimizer group (after ``setup``)."""
        if self._optimizer is None:
            raise RuntimeError("call setup() first")
        return [float(g["lr"]) for g in self._optimizer.param_groups]

    @property
    def model(self) -> torch.nn.Module:
        """The unwrapped model (after ``setup``)."""
        unwrapped: torch.nn.Module = self.accelerator.unwrap_model(self._model)
        return unwrapped

    def setup(self) -> None:
        """Seed, build model and data, optimizer and scheduler; resume when asked."""
        import torch
        from accelerate import Accelerator, DistributedDataParallelKwargs

        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        # CLIP's pooler layer norm is unused (Llava reads hidden states), so DDP must allow unused parameters.
        self._accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        seed_everything(self.cfg.seed)
        model, n = self.build()
        optim = self.cfg.optim
        groups = param_groups(model, optim.lr, self.lr_scales())
        if not groups:
            raise ValueError(f"{type(self).__name__}: no trainable parameters")
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: lr_lambda(
                s, warmup=optim.warmup_steps, total=self.cfg.max_steps, schedule=optim.schedule
            ),
        )
        self._model, self._optimizer = self.accelerator.prepare(model, optimizer)
        self._stream = IndexStream(n, self.cfg.seed)
        if self.cfg.resume_from:
            self._load(Path(self.cfg.resume_from))

    def _indices(self) -> list[int]:
        assert self._stream is not None
        acc = self.accelerator
        batch = self.cfg.batch_size
        global_batch = self._stream.take(batch * acc.num_processes)
        return global_batch[acc.process_index * batch : (acc.process_index + 1) * batch]

    def train(self) -> TrainResult:
        """Run until ``max_steps``; checkpoint every ``save_every`` steps and at the end.

        Returns:
            What the run did.
        """
        import torch

        cfg, acc = self.cfg, self.accelerator
        bf16 = cfg.mixed_precision == "bf16"
        if bf16 and acc.device.type == "cpu" and not cpu_has_native_bf16():
            logger.warning(
                "mixed_precision=bf16 on a CPU without native bfloat16 (capability %s): autocast is "
                "emulated and can be many times slower than float32; consider mixed_precision=no",
                torch.backends.cpu.get_cpu_capability(),
            )
        out = Path(cfg.out_dir)
        start, first_step = time.perf_counter(), self.step
        window: list[float] = []
        final_loss = float("nan")
        self._model.train()
        while self.step < cfg.max_steps:
            total = 0.0
            for _ in range(cfg.grad_accum):
                # Autocast here, not through Accelerator(mixed_precision=...): accelerate keeps that
                # setting in a process-wide singleton, so stages with different settings could not
                # run one after another in one process (medvlm train builtin).
                with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = self.loss(self._model, self._indices()) / cfg.grad_accum
                acc.backward(loss)
                total += float(loss.detach())
            if cfg.optim.grad_clip:
                acc.clip_grad_norm_(self._model.parameters(), cfg.optim.grad_clip)
            self._optimizer.step()
            self._scheduler.step()
            self._optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window.append(total)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                final_loss = self._log(window, start, first_step, out)
                window = []
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save(out / f"step-{self.step}")
        seconds = time.perf_counter() - start
        done = (self.step - first_step) * cfg.batch_size * cfg.grad_accum * acc.num_processes
        final = out / "final"
        self.save(final)
        return TrainResult(self.step, final_loss, seconds, done / seconds if seconds > 0 else 0.0, final)

    def _log(self, window: list[float], start: float, first_step: int, out: Path) -> float:
        acc = self.accelerator
        mean = sum(window) / max(1, len(window))
        elapsed = time.perf_counter() - start
        samples = (self.step - first_step) * self.cfg.batch_size * self.cfg.grad_accum * acc.num_processes
        record = {
            "step": self.step,
            "loss": round(mean, 5),
            "lr": self._scheduler.get_last_lr()[0],
            "samples_per_second": round(samples / elapsed, 3) if elapsed > 0 else None,
            "elapsed_s": round(elapsed, 1),
        }
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            with (out / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            logger.info("%s step %d loss %.4f", type(self).__name__, self.step, mean)
        return mean

    def trainable_names(self) -> list[str]:
        """Names of the trainable parameters of the unwrapped model."""
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def save(self, folder: Path) -> None:
        """Write a resumable checkpoint (all processes must call it).

        Args:
            folder: created; holds ``trainable.safetensors``, ``state.pt``, ``rng-rank<r>.pt``,
                ``config.yaml`` and the recipe's exports.
        """
        import torch
        from safetensors.torch import save_file

        acc = self.accelerator
        acc.wait_for_everyone()
        full = acc.get_state_dict(self._model)
        names = set(self.trainable_names())
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(rng_states(), folder / f"rng-rank{acc.process_index}.pt")
        if acc.is_main_process:
            assert self._stream is not None
            trainable = {k: v.detach().cpu().contiguous() for k, v in full.items() if k in names}
            save_file(trainable, str(folder / TRAINABLE_FILE))
            state = {
                "step": self.step,
                "optimizer": self._optimizer.state_dict(),
                "scheduler": self._scheduler.state_dict(),
                "stream": self._stream.state_dict(),
                "world_size": acc.num_processes,
            }
            torch.save(state, folder / STATE_FILE)
            save_resolved(self.cfg, folder)
            self.export(self.model, folder)
        acc.wait_for_everyone()

    def _load(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        acc = self.accelerator
        try:
            trainable = load_file(str(folder / TRAINABLE_FILE))
            state = torch.load(folder / STATE_FILE, weights_only=False)
            rng = torch.load(folder / f"rng-rank{acc.process_index}.pt", weights_only=False)
        except OSError as e:
            raise ValueError(f"resuming from {folder}: {e}") from e
        missing = set(self.trainable_names()) - set(trainable)
        if missing:
            raise ValueError(f"resuming from {folder}: checkpoint lacks {sorted(missing)[:3]}...")
        self.model.load_state_dict(trainable, strict=False)
        self._optimizer.load_state_dict(state["optimizer"])
        self._scheduler.load_state_dict(state["scheduler"])
        assert self._stream is not None
        self._stream.load_state_dict(state["stream"])
        self.step = int(state["step"])
        set_rng_states(rng)
        logger.info("resumed %s at step %d", type(self).__name__, self.step)

    def cleanup(self) -> None:
        """Release the process group when this recipe started a distributed run."""
        import torch.distributed as dist

        acc = self._accelerator
        if acc is not None and acc.num_processes > 1 and dist.is_initialized():
            acc.wait_for_everyone()
            dist.destroy_process_group()

    def run(self) -> TrainResult:
        """``setup``, ``train``, ``cleanup``."""
        self.setup()
        try:
            return self.train()
        finally:
            self.cleanup()
