"""Per-epoch checkpoints of a trial (trainable tensors + optimiser state) and the resume check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_torch_save, json_text
from training.config import CONFIG_FILE, RESUME_KEYS, TrainConfig
from training.modelling import trainable_state

CHECKPOINT_DIR = "checkpoints"


def epoch_checkpoint(trial_dir: Path, epoch: int) -> Path:
    return trial_dir / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"


def latest_checkpoint(trial_dir: Path) -> Path | None:
    folder = trial_dir / CHECKPOINT_DIR
    found = sorted(folder.glob("epoch_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(path: Path, model, optimizer, epoch: int, history: list, best: dict) -> None:
    """Written whole or not at all (a resume trusts every ``epoch_*.pt`` it finds); a full disk or a
    file size limit is raised as its OSError, said in one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"epoch": epoch, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                       "history": json_text(history, indent=None), "best": json_text(best, indent=None)}, path)


def load_checkpoint(path: Path) -> dict:
    import torch

    import pickle

    from fetaliqa_core import validate

    validate.check_torch_checkpoint(path, "the checkpoint", "It is damaged or was not written by FetalIQA: delete "
                                    "it to resume from the epoch before.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text suggests weights_only=False, the one action that would run a hostile
        # file's code: never pass it on.
        raise FetalIQAError(f"checkpoint {path} holds Python objects besides tensors, which FetalIQA refuses to "
                            "load because unpickling them could run code; it was not written by FetalIQA: delete "
                            "it to resume from the epoch before") from None
    except Exception as exc:  # noqa: BLE001 - any damage: one clear message
        raise FetalIQAError(f"checkpoint {path} cannot be read ({type(exc).__name__}); it is damaged: delete it to "
                            "resume from the epoch before") from None
    missing = [k for k in ("epoch", "model", "optimizer", "history", "best")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise FetalIQAError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by this FetalIQA or "
                            "is damaged: delete it to resume from the epoch before")
    try:
        ckpt["history"] = json.loads(ckpt["history"])
        ckpt["best"] = json.loads(ckpt["best"])
    except (TypeError, ValueError, RecursionError):
        raise FetalIQAError(f"checkpoint {path} holds a damaged training history; delete it to resume from the "
                            "epoch before") from None
    return ckpt


def prune_checkpoints(trial_dir: Path, keep: int) -> None:
    folder = trial_dir / CHECKPOINT_DIR
    found = sorted(folder.glob("epoch_*.pt"))
    for old in found[: max(0, len(found) - max(keep, 1))]:
        old.unlink(missing_ok=True)


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is the configuration a FetalIQA training wrote (another tool's config.json
    in a folder given as --out is not a run, whatever it holds)."""
    from fetaliqa_core import validate

    try:
        saved = validate.read_json_bounded(path, "the run's configuration", "")
    except FetalIQAError:
        return False
    return isinstance(saved, dict) and {"task", "data", "out", "split_seed"} <= saved.keys()


def check_resume(cfg: TrainConfig) -> None:
    run = cfg.run_dir
    saved_path = run / CONFIG_FILE
    if saved_path.is_file() and not _is_run_config(saved_path):
        raise FetalIQAError(f"--out {run} holds files that are not a FetalIQA training run (its {CONFIG_FILE} is "
                            "another program's); choose another --out" + (" and drop --resume" if cfg.resume else ""))
    # a run that stopped before its first epoch ended (a wrong base, LoRA setting or a divergence)
    # has nothing to resume: say that the folder can go, or it held the corrected command back
    unstarted = not any(run.glob(f"trial_*/{CHECKPOINT_DIR}/*.pt")) and not (run / "bundle").exists()
    if not cfg.resume:
        if run.exists() and any(run.iterdir()):
            if (run / CONFIG_FILE).is_file() and unstarted:
                raise FetalIQAError(f"--out {run} holds a run that stopped before its first epoch ended: nothing to "
                                    "resume. Delete that folder, or choose another --out")
            if (run / CONFIG_FILE).is_file():
                raise FetalIQAError(f"--out {run} already holds a run; pass --resume to continue it or choose an empty folder")
            raise FetalIQAError(f"--out {run} is not empty and holds no run; choose an empty (or new) folder for the run")
        return
    if not saved_path.is_file():
        raise FetalIQAError(f"--resume: {run} holds no run to resume ({CONFIG_FILE} missing); drop --resume to start one")
    from fetaliqa_core import validate

    saved = validate.read_json_bounded(saved_path, "the run's configuration",
                                       "Start a new run in an empty folder (drop --resume).")
    if not isinstance(saved, dict):
        raise FetalIQAError(f"--resume: {saved_path} is not a run configuration; start a new run in an empty folder "
                            "(drop --resume)")
    now = cfg.to_json()
    # a run started before a setting existed ran with that setting's default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = [k for k in RESUME_KEYS if saved.get(k, defaults.get(k)) != now.get(k)]
    if changed:
        k = changed[0]
        if unstarted:
            raise FetalIQAError(f"--resume: the run in {run} was started with {k}={saved.get(k)!r} and stopped before "
                                "its first epoch ended: nothing to resume. Delete that folder, or choose another --out")
        raise FetalIQAError(f"--resume: the run in {run} was started with {k}={saved.get(k)!r}, now {now.get(k)!r}; "
                            "resume with the same settings (only --epochs, --trials, --device, --workers may change)")
