"""A training run: its trials, their summary and the run's bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_path
from fetaliqa_core.paths import check_out_writable
from training.checkpoints import check_resume
from training.config import CONFIG_FILE, TrainConfig, validate_config
from training.data import prepare_splits
from training.distributed import barrier, broadcast_object, init_distributed
from training.loop import run_trial
from training.reporting import Reporter, write_json


def _put_bundle(source: Path, final: Path) -> None:
    """Copy the best trial's bundle to ``final`` whole or not at all: into a staging folder beside
    it, renamed into place (a full disk left a half-copied adapter beside a complete manifest, and
    the message said only "Error")."""
    import errno
    import os
    import uuid

    from fetaliqa_core.paths import os_error_message

    from fetaliqa_core.files import swap_in_dir

    staged = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(source, staged)
        swap_in_dir(staged, final)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(exc, shutil.Error):  # (a list of (source, target, reason) for the files that failed)
            reasons = [str(e[2]) for e in exc.args[0]] if exc.args and isinstance(exc.args[0], list) else [str(exc)]
            full = any(os.strerror(errno.ENOSPC) in r for r in reasons)
            exc = OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC if full else errno.EIO),
                          str(final))
        raise FetalIQAError(f"the trained bundle could not be put in {final}: {os_error_message(exc)} The best "
                            f"trial's bundle is kept in {source}; run the same command with --resume once "
                            "there is room.") from None


def claim_run_folder(run: Path) -> None:
    """Hold the run folder for this training until the process ends (the lock ``score`` takes on
    its results folders): two trainings started into one --out both said done and left one's
    bundle beside the other's configuration; a second started seconds later was told to delete
    the first's live folder."""
    from fetaliqa_core.files import claim_output_folder, output_folder_holder

    if claim_output_folder(run) is False:
        pid = output_folder_holder(run)
        raise FetalIQAError(f"--out {run}: another FetalIQA run (a training, or a scoring into the same folder) is "
                            "writing to this folder"
                            + (f" (pid {pid})" if pid else "") + "; wait for it to end, or choose another --out")


def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.trials`` models and export the best as a bundle. Returns the run summary
    (also written to ``RUN/metrics.json``); its ``"bundle"`` is the bundle's path."""
    validate_config(cfg)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    reporter = Reporter(info.is_main, cfg.progress_bar)
    try:
        problem = None
        if info.is_main:
            try:
                # before the splits are built and the cases read (a read-only --out was found at
                # the first write), as distill and eval check theirs
                check_out_writable(cfg.run_dir)
                claim_run_folder(cfg.run_dir)
                check_resume(cfg)
            except FetalIQAError as exc:
                problem = str(exc)
        problem = broadcast_object(info, problem)  # every rank stops, none waits for the others
        if problem:
            raise FetalIQAError(problem)
        run = cfg.run_dir
        splits = prepare_splits(cfg, reporter)
        if cfg.resume:
            check_same_split(run / SPLIT_FILE, splits.split_record, reporter.message)
        if info.is_main:
            run.mkdir(parents=True, exist_ok=True)
            write_json(run / CONFIG_FILE, cfg.to_json())
            write_json(run / SPLIT_FILE, splits.split_record)
        reporter.message(f"device: {device}" + (f" x {info.world_size} processes" if info.enabled else ""))
        results = []
        for trial in range(1, cfg.trials + 1):
            results.append(run_trial(cfg, trial, splits, info, device, reporter))
        summary = summarise_trials(cfg, results)
        if info.is_main:
            best = min(results, key=lambda r: r["best_val_loss"])
            final = run / "bundle"
            _put_bundle(Path(best["bundle"]), final)
            summary["bundle"] = str(final)
            summary["best_trial"] = best["trial"]
            if cfg.full_finetune:
                with atomic_path(run / "base_weights.pt") as tmp:  # (a full disk left half a file)
                    shutil.copyfile(best["base_weights"], tmp)
                summary["base_weights"] = str(run / "base_weights.pt")
            write_json(run / "metrics.json", summary)
            for key, stats in summary.get("test_summary", {}).items():
                if key in ("n_frames", "n_positive"):
                    continue
                reporter.line("SUMMARY", metric=key, mean=stats["mean"], std=stats["std"], n=stats["n"])
            print(f"BUNDLE {final}", flush=True)
        barrier(info)
        return summary
    finally:
        reporter.close_bar()
        if info.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


#: The run's case split, as it started (``RUN/split.json``).
SPLIT_FILE = "split.json"


def check_same_split(path, record: dict, note=None) -> None:
    """A resumed run must see the cases it started with in the same splits: a dataset that gained
    or lost cases was split again without a word (a training case became a validation or test
    case, and the best epoch was chosen on two different validation sets). And the same data and
    reviewers' labels: a relabelled mask, a changed CSV or another ``--extra-labels`` file trained
    on silently, and the bundle recorded the new data's hash though the first epochs learnt from
    the old. ``note``: where to say that a run started by an older FetalIQA, which recorded no
    such hash, cannot be checked (it is resumed)."""
    from fetaliqa_core.validate import read_json_bounded

    if not path.is_file():
        return
    try:
        kept = read_json_bounded(path, "the run's split", "")
    except FetalIQAError:  # (not JSON, too large or too deep: said as such just below)
        kept = None
    if not isinstance(kept, dict):
        raise FetalIQAError(f"{path}: the run's case split cannot be read, so --resume cannot check that it "
                            "trains on the same cases: start a new run (another --out)")
    for name in ("train", "val", "test"):
        before = sorted((kept.get(name) or {}).get("cases") or [])
        now = sorted(record[name]["cases"])
        if before != now:
            added, gone = len(set(now) - set(before)), len(set(before) - set(now))
            raise FetalIQAError(f"--resume: the {name} split differs from the one this run started with ({added} "
                                f"case(s) added, {gone} gone: --data changed): resuming would mix cases between "
                                "splits. Resume with the data it started with, or start a new run (another --out)")
    _check_same_data(kept, record, note or (lambda text: None))


def _check_same_data(kept: dict, record: dict, note) -> None:
    """The data's fingerprint and the labels file's hash in ``kept`` (the run's split as it
    started) against ``record`` (now); see :func:`check_same_split`."""
    before, now = kept.get("data_sha256"), record.get("data_sha256")
    if not before:
        note("note: this run was started by an older FetalIQA that did not record its data's fingerprint: "
             "--resume cannot check that --data and --extra-labels are unchanged since then")
        return
    if before != now:
        raise FetalIQAError(f"--resume: --data changed since this run started (its CSV, a mask, or a sweep file's "
                            f"name or size; data SHA-256 {str(before)[:12]}… then, {str(now)[:12]}… now): its "
                            "finished epochs learnt from the old data. Restore the data it started with, or start "
                            "a new run (another --out)")
    labels_now = record.get("extra_labels") or {}
    if "extra_labels" not in kept:
        if labels_now:
            note("note: this run was started by an older FetalIQA that did not record the --extra-labels file's "
                 "hash: --resume cannot check that the file is unchanged since then")
        return
    labels_before = kept.get("extra_labels") or {}
    if not isinstance(labels_before, dict):
        labels_before = {"sha256": repr(labels_before)}
    if labels_before.get("sha256") != labels_now.get("sha256"):
        name = labels_now.get("file") or labels_before.get("file") or "--extra-labels"
        raise FetalIQAError(f"--resume: the --extra-labels file {name} changed since this run started (SHA-256 "
                            f"{str(labels_before.get('sha256'))[:12]}… then, {str(labels_now.get('sha256'))[:12]}… "
                            "now): its finished epochs learnt from the old labels. Restore that file, or start a new "
                            "run (another --out)")


def summarise_trials(cfg: TrainConfig, results: list[dict]) -> dict:
    summary: dict = {"task": cfg.task, "trials": results}
    tests = [r["test"] for r in results if r.get("test")]
    if tests:
        stats = {}
        for key in tests[0]:
            vals = np.array([t[key] for t in tests if isinstance(t.get(key), (int, float))], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                stats[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=0)), "n": int(vals.size)}
        summary["test_summary"] = stats
    return summary
