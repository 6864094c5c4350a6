"""Scoring an archive of sweeps: one result folder per case, resumable, shardable over processes.

An archive run scores every sweep file of a folder into ``OUT/cases/<case>/`` (the files of
``fetaliqa score`` plus ``case.json``, the case's record) and writes one combined table,
``OUT/cases.csv``, built from those records alone, so it can be rebuilt from the folders at any
time. A case folder appears in one atomic rename once everything in it is written: a process
that dies loses only the case it was scoring.

A case counts as finished when its record says ``ok`` and carries the key of the current inputs:
a hash of the sweep file's bytes (and of a detached data file), the hashes of the model bundles
and their base weights, and the threshold. A rerun skips finished cases and scores the rest.

Under ``torchrun`` every process (rank) takes the cases whose index in the sorted case list is
congruent to its rank modulo the number of processes, so each case has exactly one owner.
Rank 0 waits for the others (each writes a heartbeat file while it lives) and then writes the
table; a rank whose heartbeat stops for longer than a timeout is taken as dead and its missing
cases appear as ``missing`` until a rerun scores them.

With ``--challenge-output`` rank 0 then gathers the challenge's files of every case into
``OUT/challenge`` in the challenge's output layout, from the case folders alone.

Sweeps are read, decoded and hashed by reader threads ahead of the model (a bounded number in
flight), so reading overlaps inference.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.export import (STATUS_FAILED, STATUS_INCOMPLETE, STATUS_MISSING, STATUS_OK, STATUS_STALE,
                                  STATUSES)
from fetaliqa_core.files import atomic_write, csv_writer, json_text, swap_in_dir

CASES_DIR = "cases"
RECORD_FILE = "case.json"
TABLE_FILE = "cases.csv"
CHALLENGE_DIR = "challenge"  # with --challenge-output: every case's answer in the challenge's layout
PREDICTIONS_FILE = "predictions.json"
STATE_DIR = ".archive"  # heartbeats of a distributed run (safe to delete between runs)
LOCK_FILE = ".fetaliqa-archive.lock"  # held by the run scoring into OUT (its host and pid inside)
RECORD_FORMAT = "fetaliqa-archive-case"
RECORD_VERSION = 1
HEARTBEAT_SECONDS = 2.0
DEFAULT_RANK_TIMEOUT = 300.0  # seconds without a heartbeat before rank 0 takes a rank as dead

TABLE_COLUMNS = (
    "case", "file", "status", "error", "chosen_frame", "chosen_sweep", "ac_mm", "ac_status", "ga_weeks",
    "ga_out_of_range", "n_frames", "frames_scored", "threshold", "models", "notice", "precision", "cls_hash", "seg_hash",
    "base_hash", "file_hash", "content_hash", "rank", "host", "device", "seconds", "finished_utc",
    # (added at the end, where a table of an earlier version is still taken for ours)
    "ac_extrapolated",
)
# Columns that differ between two runs with the same results (when and where a case ran).
RUN_COLUMNS = ("rank", "host", "device", "seconds", "finished_utc")
_TEXT_COLUMNS = {"case", "file", "error", "models", "notice", "host", "device"}


# -- processes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a ``torchrun`` launch (world 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def ranks_from_env(env: dict | None = None) -> Ranks:
    """Rank, world size and local rank from the variables ``torchrun`` sets."""
    env = os.environ if env is None else env
    if not launched_by_torchrun(env):
        return Ranks()
    try:
        r = Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    except ValueError:
        raise FetalIQAError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start the run with "
                            "torchrun, which sets them.") from None
    if not (0 <= r.rank < r.world and r.local_rank >= 0):
        raise FetalIQAError(f"rank {r.rank} of world size {r.world} is impossible; start the run "
                            "with torchrun, which sets them.")
    if r.distributed:
        # (without them torch.distributed ended the run in a 30-line traceback)
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise FetalIQAError(f"RANK, WORLD_SIZE and LOCAL_RANK are set but {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} not: start the run with torchrun, or set "
                                "MASTER_ADDR and MASTER_PORT (rank 0's machine and a free port) for every process.")
        if not env["MASTER_PORT"].isdigit() or not 0 < int(env["MASTER_PORT"]) < 65536:
            raise FetalIQAError(f"MASTER_PORT {env['MASTER_PORT']!r} is not a port number; give one from 1 to 65535 "
                                "(the same on every process), or start the run with torchrun.")
    return r


#: A rank started by hand waits this long in silence for the others, then says whom it waits for.
JOIN_NOTICE_S = 3.0
_JOINED = "fetaliqa/joined/"


def join_by_hand(ranks: Ranks, timeout: float, env: dict | None = None, poll: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, say: Callable[[str], None] | None = None):
    """The store of a run whose ranks were started by hand (RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT set, no torchrun): every rank waits here until all have joined, in short steps, so
    that Ctrl-C and SIGTERM end it at once and it can say which ranks it waits for. (Left to
    ``init_process_group``, rank 0 waited ten minutes in silence for a rank that never came, deaf
    to both.) Waits at most ``timeout`` seconds."""
    import socket as sockets
    import sys

    import torch.distributed as dist

    env = os.environ if env is None else env
    addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    where = f"{addr}:{port}"
    start, told = clock(), None
    wait = datetime.timedelta(seconds=max(timeout, 1.0))

    def waiting(whom: str) -> None:
        nonlocal told
        if clock() - start > timeout:
            raise FetalIQAError(f"rank {ranks.rank}: {whom} did not join at {where} in {timeout:.0f} s "
                                f"(--rank-timeout): start all {ranks.world} processes with the same MASTER_ADDR, MASTER_PORT and "
                                "WORLD_SIZE, or start the run with torchrun.")
        if whom != told and clock() - start >= JOIN_NOTICE_S:
            say(f"fetaliqa: rank {ranks.rank}: waiting for {whom} to join at {where} (WORLD_SIZE {ranks.world}; "
                f"at most {timeout:.0f} s, --rank-timeout; Ctrl-C stops)")
            told = whom
        time.sleep(poll)

    if ranks.is_main:
        try:
            store = dist.TCPStore(addr, port, ranks.world, True, timeout=wait, wait_for_workers=False)
        except RuntimeError as exc:
            raise FetalIQAError(f"rank 0 cannot listen at {where} ({str(exc).splitlines()[0][:160]}): give "
                                "MASTER_PORT a free port of this machine (the same on every process).") from None
    else:
        while True:  # (a store client retries on its own for the whole timeout, deaf to Ctrl-C)
            try:
                with sockets.create_connection((addr, port), timeout=2.0):
                    break
            except OSError:
                waiting("rank 0")
        try:
            store = dist.TCPStore(addr, port, ranks.world, False, timeout=wait)
        except RuntimeError as exc:
            raise FetalIQAError(f"rank {ranks.rank}: cannot reach rank 0 at {where} "
                                f"({str(exc).splitlines()[0][:160]}); see rank 0's messages") from None
    try:
        store.set(f"{_JOINED}{ranks.rank}", hostname())
        while True:
            absent = [r for r in range(ranks.world) if not store.check([f"{_JOINED}{r}"])]
            if not absent:
                return store
            waiting(f"rank{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))}")
    except RuntimeError as exc:  # rank 0 stopped meanwhile
        raise FetalIQAError(f"rank {ranks.rank}: lost contact with rank 0 at {where} before the run began "
                            f"({str(exc).splitlines()[0][:160]}); see rank 0's messages") from None


def init_process_group(ranks: Ranks, device: str, join_timeout: float = DEFAULT_RANK_TIMEOUT) -> None:
    """Join the process group ``torchrun`` set up: NCCL when this process runs on a CUDA GPU
    (``cuda:LOCAL_RANK``, made the current device so the models load there), gloo otherwise.
    Scoring exchanges nothing but the case list, so a gloo group is added for it in both cases.
    Ranks started by hand meet through :func:`join_by_hand` first (at most ``join_timeout`` s)."""
    if not ranks.distributed:
        return
    import torch
    import torch.distributed as dist

    use_cuda = (device == "auto" or str(device).startswith("cuda")) and torch.cuda.is_available()
    if use_cuda:
        if ranks.local_rank >= torch.cuda.device_count():
            raise FetalIQAError(
                f"local rank {ranks.local_rank} has no GPU: this machine has "
                f"{torch.cuda.device_count()}; give torchrun --nproc_per_node at most that many.")
        torch.cuda.set_device(ranks.local_rank)
    if dist.is_initialized():
        return
    backend = "nccl" if use_cuda else "gloo"
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun's agents have met already: its store is ready
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        return
    store = join_by_hand(ranks, join_timeout)
    dist.init_process_group(backend, store=store, rank=ranks.rank, world_size=ranks.world,
                            timeout=datetime.timedelta(minutes=10))


def broadcast_from_main(ranks: Ranks, obj):
    """Rank 0's ``obj`` on every rank (a gloo group carries it, whatever the default backend)."""
    if not ranks.distributed:
        return obj
    import torch.distributed as dist

    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0, group=group)
    except RuntimeError as exc:  # a rank that stopped before sharing: one line, not a traceback
        others = "the other processes' messages" if ranks.is_main else "rank 0's message"
        raise FetalIQAError(f"rank {ranks.rank}: lost contact with the other processes before the run "
                            f"began ({str(exc).splitlines()[0][:160]}); see {others}") from None
    return box[0]


def gather(ranks: Ranks, obj) -> list:
    """Every rank's ``obj``, by rank, on every rank."""
    if not ranks.distributed:
        return [obj]
    import torch.distributed as dist

    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    found: list = [None] * ranks.world
    try:
        dist.all_gather_object(found, obj, group=group)
    except RuntimeError as exc:
        raise FetalIQAError(f"rank {ranks.rank}: lost contact with the other processes before the run "
                            f"began ({str(exc).splitlines()[0][:160]}); see the other processes' messages") from None
    return found


def first_problem(ranks: Ranks, problem: str | None) -> str | None:
    """Every rank's ``problem`` (None: none) gathered on every rank: the first one found, so that
    all stop together with it (a rank that stopped alone left rank 0 waiting out its timeout and
    then calling it a rank that "stopped without finishing")."""
    return next((p for p in gather(ranks, problem) if p), None)


#: What every rank must score with, for rank 0's table to take the others' cases as this run's:
#: (field of :func:`rank_settings`, how the message names it).
_SHARED_SETTINGS = (("hashes", "models"), ("threshold", "threshold"), ("spacing", "--spacing"),
                    ("student", "cascade student"), ("precision", "precision asked"))


def rank_settings(ranks: Ranks, models_text: str, hashes: dict, threshold: float, spacing: float | None,
                  student_hash: str | None, precision: str, precision_from: str) -> dict:
    """What this rank's results depend on besides the files, for :func:`settings_problem`. The
    number format a machine chose itself is left out: left to each machine, formats may differ
    (:func:`run_settings_keys`); the one asked for (or "auto") is in."""
    return {"rank": ranks.rank, "host": hostname(), "models": models_text,
            "hashes": {k: v for k, v in sorted(hashes.items()) if k != "precision"},
            "threshold": float(threshold), "spacing": spacing, "student": student_hash,
            "precision": precision, "precision_from": precision_from}


def settings_problem(settings: Sequence[dict]) -> str | None:
    """One line naming the first rank that scores with other settings than rank 0 (models,
    threshold, spacing, cascade student, precision asked), or None. Each rank scored its shard
    with its own settings and rank 0 judged the whole table by its own: the other machine's cases
    were ``stale`` for good, and a rerun changed nothing."""
    first = settings[0]

    def shown(s: dict, field: str) -> str:
        if field == "hashes":
            return s["models"]
        if field == "precision":
            return ("auto, left to the machine" if s["precision"] == "auto"
                    else f"{s['precision']} from {s.get('precision_from') or '--precision'}")
        return "none" if s[field] is None else str(s[field])

    for s in settings[1:]:
        differ = [(label, field) for field, label in _SHARED_SETTINGS if s.get(field) != first.get(field)]
        if not differ:
            continue
        label, field = differ[0]
        if field == "hashes" and s["models"] == first["models"]:
            what = f"other model files of the same names ({s['models']})"
        else:
            what = f"{label} {shown(s, field)} (rank 0 on {first['host']}: {shown(first, field)})"
        more = f" (also {', '.join(lbl for lbl, _ in differ[1:])})" if differ[1:] else ""
        return (f"rank {s['rank']} on {s['host']} would score with other settings than rank 0: {what}{more}. "
                "Every process must score with the same models, threshold, --spacing and precision "
                "(--precision, or FETALIQA_PRECISION in its environment), or rank 0's table calls the others' "
                "cases stale: give every machine the same options and environment, then start again.")
    return None


def archive_problem(ranks: Ranks, archive: Path, relative: Sequence[str], stats: Sequence[str | None]) -> str | None:
    """Whether this rank's ``archive`` holds rank 0's cases (``relative``: their paths in rank 0's
    archive, ``stats``: their :func:`file_stat` there): one line naming what is absent or differs,
    or None. A machine that mounts the archive elsewhere reads it through its own path; one that
    lacks the files failed its whole shard as "no such file" and rank 0 exited 0."""
    absent, differ = [], []
    for rel, stat in zip(relative, stats):
        member = archive / rel if rel else archive
        if not os.path.lexists(member):
            absent.append(rel or archive.name)
        elif stat is not None and file_stat(member) not in (None, stat):
            differ.append(rel or archive.name)
    if not absent and not differ:
        return None
    from fetaliqa_core.errors import first_names

    where = f"rank {ranks.rank} on {hostname()}: its archive {archive.expanduser().resolve()}"
    if absent:
        what = f"lacks {len(absent)} of rank 0's {len(relative)} case file(s) ({first_names(absent)})"
    else:
        what = (f"has {len(differ)} file(s) of another size or modification time than rank 0's "
                f"({first_names(differ)}; a copy must keep the files' times, e.g. rsync -a)")
    return (f"{where} {what}: give every machine the same archive (it may be mounted at another path; "
            "give each machine its own path to it), then start again.")


def plan_file(out: Path, run_id: str) -> Path:
    """Where rank 0 leaves its run's plan in its output folder: a rank that does not find it under
    its own --out writes to another folder than rank 0 (a relative --out started from another
    working folder, a path another machine mounts elsewhere)."""
    return out / STATE_DIR / run_id / "plan.json"


def close_process_group(ranks: Ranks) -> None:
    if not ranks.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n_cases: int, ranks: Ranks) -> list[int]:
    """Indices (into the sorted case list) this rank scores: every case exactly once overall."""
    return list(range(ranks.rank, n_cases, ranks.world))


def shard_by_name(names: Sequence[str], part: int, parts: int) -> list[int]:
    """Indices of the cases part ``part`` (1 to ``parts``) of ``--shard`` scores: those whose case
    name hashes to it. Each part lists the archive when it starts, on its own machine: split by
    position, one file added between two parts' starts moved every case after it, so two parts
    scored the same half and left the other half to neither, without a word. By name, a file
    added or removed moves only its own case."""
    def owner(name: str) -> int:
        digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % parts

    return [i for i, name in enumerate(names) if owner(name) == part - 1]


# -- cases and keys --------------------------------------------------------------------------

def case_names(members: Sequence[Path], stem: Callable[[Path], str], reserved: Sequence[str] = (),
               suffix: str = "~case") -> list[str]:
    """A folder name per member: its stem, or its whole file name where two stems collide; a name
    in ``reserved`` (a file of the output's own beside the folders) gets ``suffix``."""
    stems = [stem(m) for m in members]
    stems = [f"{s}{suffix}" if s in reserved else s for s in stems]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names = [s if counts[s] == 1 else m.name for s, m in zip(stems, members)]
    # a stem can still equal another member's whole name (a.mha, a.nii, a.mha.nii): number the
    # later ones, so that two files never share one case folder
    seen: set[str] = set()
    for k, name in enumerate(names):
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}~{n}", n + 1
        seen.add(unique)
        names[k] = unique
    return names


_DETACHED = re.compile(rb"^\s*(ElementDataFile|data file|datafile)\s*[:=]\s*(.+?)\s*$",
                       re.IGNORECASE | re.MULTILINE)


def _detached_data_file(path: Path) -> Path | None:
    """The data file a MetaImage (.mhd) or NRRD header points to, if any."""
    if path.suffix.lower() not in (".mhd", ".nrrd", ".nhdr"):
        return None
    try:  # (a sequence metafile's header runs to megabytes; a .mhd file is only a header)
        with open(path, "rb") as fh:
            head = fh.read(16 << 20 if path.suffix.lower() == ".mhd" else 1 << 20)
    except OSError:
        return None
    head = head.split(b"\n\n", 1)[0] if path.suffix.lower() != ".mhd" else head
    m = _DETACHED.search(head)
    if not m:
        return None
    name = m.group(2).decode("utf-8", "replace").strip()
    if name.upper() == "LOCAL" or not name or name.upper().startswith("LIST"):
        return None
    return path.parent / name


def member_names(folder: Path) -> list[str]:
    """The names of a DICOM series folder's files (regular files, links followed, hidden ones
    aside as the reader skips them), sorted: one directory scan, no Path made per entry (a
    folder of 50,000 files, looked at on every activation of the window, took 2-2.5 s so)."""
    def regular(entry: os.DirEntry) -> bool:
        try:
            return entry.is_file()
        except OSError:
            return False

    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and regular(e))


def member_files(path: Path) -> list[Path]:
    """The files an archive member is read from: a sweep file (and its detached data file, if it
    has one), or every file of a DICOM series folder (:func:`member_names`)."""
    if path.is_dir():
        return [path / name for name in member_names(path)]
    files = [path]
    extra = _detached_data_file(path)
    if extra is not None and extra.is_file():
        files.append(extra)
    return files


def file_hash(path: Path) -> str:
    """BLAKE2b (128 bit) of an archive member's files (:func:`member_files`): a sweep file's
    bytes, or the names, sizes and bytes of every file of a DICOM series folder, so that any file
    added, removed or changed in the series changes the key."""
    h = hashlib.blake2b(digest_size=16)
    series = path.is_dir()
    if series:
        h.update(b"dicom series\0")
    for p in member_files(path):
        h.update(p.name.encode("utf-8", "surrogateescape") + b"\0")
        if series:
            h.update(str(p.stat().st_size).encode() + b"\0")
        _hash_bytes(h, p)
    return h.hexdigest()


def file_stat(path: Path) -> str | None:
    """A cheap signature of an archive member as it is now (size and modification time of each
    of its files, :func:`member_files`): the table compares it with the one recorded when the
    case was scored, so a file changed since (a case another process never rescored) is not
    reported as scored. None when it cannot be read."""
    try:
        parts = []
        for p in member_files(path):
            st = p.stat()
            parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    except OSError:
        return None
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _hash_bytes(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)


def model_hashes(models) -> dict:
    """What the results depend on besides the sweep: each bundle, the base weights it runs on,
    and the number format the models compute in (bf16 and fp32 give slightly different scores)."""
    def base(m):
        return getattr(getattr(m, "base", None), "sha256", None)

    cls, seg = models.cls, models.seg
    first = cls if cls is not None else seg
    dtype = str(getattr(first, "dtype", "")).replace("torch.", "")
    return {"cls_hash": cls.bundle_hash if cls is not None else None,
            "seg_hash": seg.bundle_hash if seg is not None else None,
            "base_hash": base(first),
            "precision": {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(dtype, dtype)}


def bundle_columns(models, hashes: dict) -> dict:
    """``hashes`` for the table: each bundle's own SHA-256, as summary.json gives it, also for a
    pair loaded on one base (whose loaded model carries the pair's hash; the settings key keeps
    that one, so records written before stay valid)."""
    from fetaliqa_core.models.choice import bundle_part

    out = dict(hashes)
    for key, role, m in (("cls_hash", "classifier", models.cls), ("seg_hash", "segmenter", models.seg)):
        if m is not None and getattr(m, "parts", None):
            out[key] = bundle_part(m, role)[1]
    return out


def settings_key(hashes: dict, threshold: float) -> str:
    text = json.dumps({"v": RECORD_VERSION, **hashes, "threshold": float(threshold)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_settings_keys(hashes: dict, threshold: float, spacing: float | None = None,
                      student_hash: str | None = None, precision_asked: bool = False) -> tuple[str, ...]:
    """The settings keys a run writes (the first) and accepts (all). The number format counts
    only when the user asked for one: left to each machine (bf16 where its CPU or GPU has it,
    fp32 elsewhere), it is recorded but does not make another machine's results stale, so an
    archive shared by machines of both kinds is scored once (the two differ by a few hundredths in
    the scores, measured by ``fetaliqa bench``'s precision section and in the README, which can move a
    borderline call or the chosen frame within its run; ``--precision`` makes every case computed
    one way, and such results are accepted too). Records from before this rule, keyed with a number format, stay
    valid."""
    exact = run_settings_key(hashes, threshold, spacing, student_hash)
    shared = run_settings_key({k: v for k, v in hashes.items() if k != "precision"}, threshold, spacing, student_hash)
    if precision_asked:
        # a record a machine left to choose scored in the format asked for is one of these too
        # (``KEY@FORMAT``: the settings key when the record's own precision is FORMAT)
        return (exact, f"{shared}@{hashes.get('precision')}")
    keyed = [run_settings_key(dict(hashes, precision=p), threshold, spacing, student_hash)
             for p in ("bf16", "fp32", "fp16")]
    return (shared, exact, *[k for k in keyed if k != exact])


def run_settings_key(hashes: dict, threshold: float, spacing: float | None = None,
                     student_hash: str | None = None) -> str:
    """:func:`settings_key` of a run, with a spacing given on the command line (the AC, its doubt)
    and a cascade's student (which frames the models score) when there are: a plain run keeps the
    key of the records written before these counted."""
    extra = {"spacing": spacing, "student_hash": student_hash}
    return settings_key(dict(hashes, **{k: v for k, v in extra.items() if v is not None}), threshold)


def case_key(fhash: str, settings: str) -> str:
    return hashlib.sha256(f"{fhash}:{settings}".encode()).hexdigest()[:32]


def settings_accepted(record: dict, accepted: Sequence[str]) -> bool:
    """Whether ``record`` was scored with settings a run accepts (:func:`run_settings_keys`)."""
    return any(record.get("settings_key") == key and (not fmt or record.get("precision") == fmt)
               for key, _, fmt in (a.partition("@") for a in accepted))


def accepted_case_keys(record: dict | None, fhash: str, accepted: Sequence[str]) -> list[str]:
    """The case keys of ``fhash`` a run accepts for ``record`` (a ``KEY@FORMAT`` entry counts only
    for a record scored in that format)."""
    return [case_key(fhash, key) for key, _, fmt in (a.partition("@") for a in accepted)
            if not fmt or (record or {}).get("precision") == fmt]


# -- records ---------------------------------------------------------------------------------

def case_error(exc: BaseException, member: Path) -> str:
    """One line for a case that could not be scored, for its row: the product's own message,
    or the cause of a file-system error, or the kind of an unexpected error."""
    if isinstance(exc, FetalIQAError):
        return str(exc)
    if isinstance(exc, OSError):
        import errno

        from fetaliqa_core.paths import os_error_cause

        where = f" ({exc.filename})" if exc.filename else ""
        advice = {errno.EACCES: "give this user read access to it (or copy it where it can be read)",
                  errno.EPERM: "give this user read access to it (or copy it where it can be read)",
                  errno.ENOENT: "it went away during the run: check the archive"}.get(exc.errno or 0, "check it")
        return f"{member.name}: {os_error_cause(exc)}{where}; {advice}, then run the same command again"
    return f"{member.name}: unexpected {type(exc).__name__}: {exc}"


def prepare_out(out: Path) -> None:
    """Create ``OUT/cases`` or say in one line why it cannot be (before any model is loaded)."""
    try:
        (out / CASES_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / CASES_DIR / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        raise FetalIQAError(f"{out}: cannot write results there ({cause}). Give --out a folder you "
                            "can write to.") from None


#: The lock files this process holds, by the output folder's full path: open while it runs.
_OUT_LOCKS: dict[str, int] = {}


def lock_out(out: Path) -> str:
    """Hold ``OUT/.fetaliqa-archive.lock`` for this run (an flock on the open file: the system
    releases it when the process ends, however it ends, so no lock outlives its run). Another
    run scoring into the same folder at the same time, on this machine or another one sharing
    the disk, replaced this run's case folders and table without a word, both saying done.
    Raises one line naming that run's host and pid when it holds the lock; returns a warning
    (one line) when the folder's file system takes no locks, the run going on unguarded, else
    "". A folder that cannot be made is left to :func:`prepare_out`, which says why. Only the
    main process of a run takes it: torchrun's ranks are one run, joined by its rendezvous."""
    try:
        import fcntl
    except ImportError:  # (no flock on this system: nothing to hold)
        return ""
    key = str(out.expanduser().resolve())
    if key in _OUT_LOCKS:
        return ""
    name = out / LOCK_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""  # (prepare_out says why the folder cannot be written)
    try:
        # (never through a link: the holder's line is written into the file, which would then be
        # another one's, anywhere the link leads)
        fd = os.open(name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        if name.is_symlink() or not name.is_file():
            return (f"{name} is {'a link' if name.is_symlink() else 'no plain file'}, not this program's lock: left "
                    "as it is, so another run scoring into the folder at the same time would not be refused")
        return ""  # (prepare_out says why the folder cannot be written)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 200).decode("utf-8", "replace").split()
        except OSError:
            holder = []
        os.close(fd)
        known = len(holder) >= 2 and holder[1].isdigit()
        raise out_busy(out, holder[0] if known else None, int(holder[1]) if known else None) from None
    except OSError as exc:  # (some network file systems take no locks)
        os.close(fd)
        return (f"{out}: its file system takes no lock ({exc.strerror or type(exc).__name__}), so another run "
                "scoring into it at the same time would not be refused; run one at a time there")
    try:  # who holds it, for the line that refuses another run
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{hostname()} {os.getpid()}\n".encode("utf-8", "surrogateescape"), 0)
    except OSError:
        pass
    _OUT_LOCKS[key] = fd
    return ""


def out_busy(out: Path, host: str | None, pid: int | None) -> FetalIQAError:
    """The line that refuses a run an output folder another run is scoring into (host and pid
    of that run when known)."""
    who = f" (host {host}, pid {pid})" if host and pid is not None else ""
    return FetalIQAError(f"another FetalIQA run{who} is scoring into {out}; wait for it or give another --out")


def unlock_outs() -> None:
    """Release the locks :func:`lock_out` took (at the end of a run; the file is left: removing it
    could let a third run lock a new file while a second holds the old one)."""
    while _OUT_LOCKS:
        _, fd = _OUT_LOCKS.popitem()
        try:
            os.close(fd)
        except OSError:
            pass


def case_dir(out: Path, name: str) -> Path:
    return out / CASES_DIR / name


def read_record(folder: Path) -> dict | None:
    """A case's record, or None when absent or not one of ours (never trusted blindly)."""
    try:
        with _open_regular(folder / RECORD_FILE, follow=True) as fh:  # (a pipe there: never waited on)
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    if data.get("status") not in (STATUS_OK, STATUS_INCOMPLETE, STATUS_FAILED):
        return None
    return data


def is_finished(record: dict | None, key: str | Sequence[str], needed_files: Sequence[str] = (),
                folder: Path | None = None) -> bool:
    """A record of a successful run on the same inputs (and with the files asked for now);
    ``key``: the case key, or the keys a run accepts."""
    keys = (key,) if isinstance(key, str) or key is None else tuple(key)
    if record is None or record.get("status") != STATUS_OK or record.get("key") not in keys:
        return False
    return folder is None or written_with(folder, record, needed_files)


def rescore_reason(record: dict | None, fhash: str | None, columns: dict, threshold: float,
                   accepted: Sequence[str], needed_files: Sequence[str] = (), folder: Path | None = None) -> str | None:
    """Why a case with a record is scored again, in words for its progress line (None for a case
    never scored): a rerun that rescored a 300-case archive said only each case's answer, so an
    intended rescore (a new threshold, new models) could not be told from an accidental one (a
    file touched by a copy). ``columns``: this run's :func:`bundle_columns`."""
    if record is None:
        if folder is not None and damaged_folder(folder):
            return "its case.json is damaged"
        return None
    status = record.get("status")
    if status == STATUS_FAILED:
        return "it failed in an earlier run"
    if status != STATUS_OK:
        return "its earlier scoring did not finish"
    if fhash is not None and record.get("file_hash") not in (None, fhash):
        return "the file changed since it was scored"
    if not settings_accepted(record, accepted):
        changed = [what for key, what in (("cls_hash", "classifier"), ("seg_hash", "segmenter"))
                   if record.get(key) != columns.get(key)]
        if changed:
            return f"scored before with another {' and '.join(changed)}"
        if record.get("base_hash") != columns.get("base_hash"):
            return "scored before on other base weights"
        earlier = record.get("threshold")
        if isinstance(earlier, (int, float)) and abs(float(earlier) - float(threshold)) > 1e-9:
            return f"scored before at threshold {float(earlier):g} (now {float(threshold):g})"
        asked = any("@" in key for key in accepted)  # (--precision given: see run_settings_keys)
        if asked and record.get("precision") != columns.get("precision"):
            return f"scored before in {record.get('precision')} (now {columns.get('precision')}, as asked)"
        return "scored before with other settings (pixel spacing or cascade)"
    if folder is not None and not all((folder / name).is_file() for name in needed_files):
        return "its challenge output files are missing"
    if folder is not None:
        return folder_problem(folder, record, needed_files)
    return None


def refresh_file_stat(folder: Path, record: dict, fstat: str | None) -> None:
    """Record ``fstat`` in a finished case's record whose file was found unchanged by its hash
    but whose signature (modification time) differs: the table must not call it stale."""
    if fstat is None or record.get("file_stat") == fstat:
        return
    try:
        atomic_write(folder / RECORD_FILE, record_json(dict(record, file_stat=fstat)))
    except OSError:
        pass  # a read-only result folder: the table says "stale", a rerun says why


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _record_digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "record_hash"}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def record_json(record: dict) -> str:
    """``record`` as case.json's text, sealed with a hash of its own content (``record_hash``): a
    record changed by hand showed its own chosen frame and AC as ``ok`` in the table while the
    case's summary.json, frames.csv and challenge answer said otherwise."""
    body = json.loads(json_text({k: v for k, v in record.items() if k != "record_hash"}))  # as read back
    return json_text(dict(body, record_hash=_record_digest(body))) + "\n"


#: Files of a case folder that its record does not list: the record itself and the list of
#: result files :func:`fetaliqa_core.export.write_scores` writes after it.
_UNLISTED = (RECORD_FILE, ".fetaliqa-outputs.json")
_FILE_HASHES: dict[tuple, str] = {}  # (path, size, mtime, inode) -> hash: each file is read once per run


class NotPlainFile(OSError):
    """A path of a case folder that is no regular file (a link, a pipe, a device, a folder)."""


def _open_regular(path: Path, follow: bool = False):
    """``path`` opened for reading in binary, only if it is a regular file (a link to one too
    with ``follow``). It is opened without waiting (a pipe with no writer would block the open
    for ever, /dev/zero never ends) and checked once open, so nothing swapped in between the check
    and the open is read. Raises :class:`NotPlainFile` otherwise, OSError when it cannot be read."""
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
        if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():
            raise NotPlainFile(f"{path}: a link")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP and not follow:  # (O_NOFOLLOW on a link)
            raise NotPlainFile(f"{path}: a link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotPlainFile(f"{path}: not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _content_hash(path: Path, remember: bool = True) -> str:
    """BLAKE2b (128 bit) of the regular file ``path`` (:func:`_open_regular`: never a link, a pipe
    or a device), read once per run unless it changes."""
    with _open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        sig = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if sig not in _FILE_HASHES:
            h = hashlib.blake2b(digest_size=16)
            while chunk := fh.read(1 << 22):
                h.update(chunk)
            if not remember:  # (a folder being written: its path is gone once it is in place)
                return h.hexdigest()
            _FILE_HASHES[sig] = h.hexdigest()
    return _FILE_HASHES[sig]


def _plain_name(name) -> bool:
    """Whether ``name`` is a name :func:`folder_files` could have written: one file directly in
    the case folder, not hidden. A record lists its files by name, and it is only a text file:
    a list naming /dev/zero, a pipe or ../../elsewhere was read from there (for ever, for the
    first two)."""
    return (isinstance(name, str) and bool(name) and name.isprintable() and not name.startswith(".")
            and not any(c in name for c in "/\\:") and os.path.basename(name) == name)


def folder_files(folder: Path) -> dict[str, str]:
    """The result files in a case folder being written, with a hash of each, for its record: the
    folder is later judged as one set (:func:`folder_problem`)."""
    return {p.name: _content_hash(p, remember=False) for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name not in _UNLISTED}


def folder_problem(folder: Path, record: dict, needed: Sequence[str] = ()) -> str | None:
    """Why the files of case folder ``folder`` are not the ones written with its ``record`` (in
    words, for a progress line and the table), or None when they are: its record changed after it
    was written, a file it lists is gone or changed (a damaged copy), or a file of ``needed`` (the
    challenge's) is not one of them. Two runs' folders merged by ``cp -r`` held one run's record
    and results beside the other run's challenge answer, and the merge kept them all. A record of
    an earlier version lists no files: only its challenge answer's frame is checked against it."""
    sealed = record.get("record_hash")
    if sealed is not None and sealed != _record_digest(record):
        return "its case.json was changed after it was written"
    listed = record.get("files")
    if not isinstance(listed, dict):
        return _legacy_challenge_problem(folder, record) if needed else None
    for name, digest in sorted(listed.items()):
        if not _plain_name(name):
            return f"its case.json lists {name!r}, which is not a file of its folder (the record was edited)"
        try:
            if _content_hash(folder / name) != digest:
                return f"its {name} is not the one written with its case.json (changed or damaged since)"
        except NotPlainFile:
            return f"its {name} is not a plain file (a link, a pipe or a device; FetalIQA writes none)"
        except OSError:
            return f"its {name} is missing"
    absent = [n for n in needed if n not in listed]
    if absent:
        present = any((folder / n).exists() for n in absent)
        return ("its challenge output files were not written with its case.json (another run's, "
                "copied into its folder)" if present else "its challenge output files are missing")
    return None


def _legacy_challenge_problem(folder: Path, record: dict) -> str | None:
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_SEARCH

    try:
        frame = json.loads((folder / CHALLENGE_FRAME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None  # absent: said by the check of the files needed
    chosen = record.get("chosen_frame")
    if frame == chosen:
        return None
    # (the answer may be a neighbour of the chosen frame, or -1, by design: where the chosen frame's
    # mask is empty in the field of view; an earlier version's results were scored again for it)
    if isinstance(frame, int) and isinstance(chosen, int) and chosen >= 0 and (
            frame == -1 or abs(frame - chosen) <= CHALLENGE_MASK_SEARCH):
        return None
    return (f"its challenge answer (frame {frame}) is not its record's chosen frame ({chosen}): another "
            "run's, copied into its folder")


def challenge_files_of_record(folder: Path, record: dict | None) -> bool:
    """Whether the challenge's two files in ``folder`` were written with ``record`` (present, and
    unchanged since)."""
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE

    return record is not None and written_with(folder, record, (CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE))


def written_with(folder: Path, record: dict, needed: Sequence[str]) -> bool:
    """Whether the files ``needed`` are in case folder ``folder`` and its files are the ones
    written with ``record`` (:func:`folder_problem`)."""
    return all((folder / name).is_file() for name in needed) and folder_problem(folder, record, needed) is None


def foreign_folder(folder: Path) -> bool:
    """True when ``folder`` exists but is not a case folder this program wrote (no record of
    ours, and not empty): it is never replaced or deleted."""
    if not folder.exists() and not folder.is_symlink():
        return False
    if read_record(folder) is not None or damaged_folder(folder):
        return False
    return not (folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()))


#: The files a case folder of ours holds; a folder of these alone whose case.json cannot be read
#: (cut short by a failed copy) is ours, damaged, and is scored again.
_CASE_FILES = {RECORD_FILE, ".fetaliqa-outputs.json", "frames.csv", "summary.json", "cascade.json",
               "fetal-abdomen-frame-number.json", "fetal-abdomen-segmentation.mha"}


def damaged_folder(folder: Path) -> bool:
    """Whether ``folder`` is a case folder of ours whose case.json is there but cannot be read as
    one (a case.json cut short made the case ``failed``, 'not written by FetalIQA', for good)."""
    try:
        if folder.is_symlink() or not folder.is_dir() or not (folder / RECORD_FILE).is_file():
            return False
        names = {p.name for p in folder.iterdir()}
        if not names <= _CASE_FILES or read_record(folder) is not None:
            return False
        head = (folder / RECORD_FILE).read_bytes()[:4096]
    except OSError:
        return False
    return not head.strip() or f'"{RECORD_FORMAT}'.encode() in head or head.lstrip().startswith(b"{")


def replace_case_dir(staged: Path, target: Path) -> None:
    """Put a fully written case folder in place of ``target``. The old folder is renamed away
    first and removed after: at every instant ``target`` is either absent or complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if foreign_folder(target):
        raise FetalIQAError(f"{target}: exists and was not written by FetalIQA; it is left as it is. "
                            "Move it away or choose another --out.")
    swap_in_dir(staged, target)


def staging_dir(out: Path, name: str) -> Path:
    """A fresh, not yet existing path next to the case folders to write a case into."""
    root = out / CASES_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root / f".{name}.tmp-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


#: A temporary folder of another machine is taken for a leftover only when this old (its process
#: may still be writing it: machines sharing one --out cannot see each other's processes).
FOREIGN_LEFTOVER_S = 6 * 3600


def _host_tag() -> str:
    """This machine in a temporary folder's name: readable, and unique by a short hash of the
    whole host name (two names that differ only in dropped characters or past the cut differ)."""
    name = hostname()
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    return (re.sub(r"[^A-Za-z0-9.]", "", name)[:32] or "host") + "." + digest


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


def clean_leftovers(out: Path, names: Sequence[str]) -> None:
    """Remove temporary folders a killed process left for the given cases (ours only): an old
    case folder moved away, or a case being written by a process of this machine that no longer
    runs, or by another machine's process :data:`FOREIGN_LEFTOVER_S` ago. A second process on the
    same folder, here or on another machine, keeps the folder it is writing."""
    root = out / CASES_DIR
    wanted = set(names)
    if not root.is_dir():
        return
    now = time.time()
    for p in root.iterdir():
        # a case's attempt marker being written when its process was killed (see mark_attempt)
        m = re.match(rf"^\.(.+?){re.escape(ATTEMPT_SUFFIX)}\.{_LEFTOVER_TAG}$", p.name)
        if m and m.group(1) in wanted and m.group(3) is not None and p.is_file():
            if _left_over(p, m.group(2), int(m.group(3)), now):
                with contextlib.suppress(OSError):
                    p.unlink()
            continue
        # (also the results folder's own temporary one inside a staging folder's name: "..<case>.tmp-….<random>")
        m = re.match(rf"^\.\.?(.+?)\.{_LEFTOVER_TAG}(?:\.[A-Za-z0-9_]+)?$", p.name)
        if not (m and m.group(1) in wanted and p.is_dir()):
            if _untagged_leftover(p, wanted, now):
                shutil.rmtree(p, ignore_errors=True)
            continue
        if m.group(3) is None or _left_over(p, m.group(2), int(m.group(3)), now):
            shutil.rmtree(p, ignore_errors=True)


def _untagged_leftover(p: Path, wanted: set[str], now: float) -> bool:
    """A results writer's temporary folder an earlier version left beside a case's staging
    folder, its name cut to 40 characters before the process's tag (``..<case>.tm.<random>``):
    no owner can be read from it, so it is taken for a leftover only when
    :data:`FOREIGN_LEFTOVER_S` old (a run of that version may still be writing it)."""
    m = re.match(r"^\.\.(.{1,39})\.[A-Za-z0-9_]{8}$", p.name)
    if not m or not p.is_dir() or p.is_symlink():
        return False
    cut = "." + m.group(1)  # the first 40 characters of ".<case>.tmp-<host>-<pid>-<hex>"
    if len(cut) != 40:
        return False
    if not any(cut.startswith(f".{c}") and (f".{c}.tmp-".startswith(cut) or cut.startswith(f".{c}.tmp-"))
               for c in wanted):
        return False
    try:
        return now - p.stat().st_mtime >= FOREIGN_LEFTOVER_S
    except OSError:
        return False


#: The tag of a folder being replaced (old-<hex>) or written (tmp-[<host>-]<pid>-<hex>): groups host, pid.
_LEFTOVER_TAG = r"(?:old-[0-9a-f]{8}|tmp-(?:([A-Za-z0-9.]+)-)?(\d+)-[0-9a-f]{8})"


def _left_over(path: Path, host: str | None, pid: int, now: float) -> bool:
    """Whether a temporary folder named by ``host`` and ``pid`` was left by a process that no longer
    writes it: one of this machine that no longer runs, one named before hosts were, or another
    machine's :data:`FOREIGN_LEFTOVER_S` ago (its process may still be writing it)."""
    if host == _host_tag():
        return pid == os.getpid() or not _pid_alive(pid)
    if host is None:
        return True
    try:
        return now - path.stat().st_mtime >= FOREIGN_LEFTOVER_S
    except OSError:
        return False


def _clean_challenge_leftovers(out: Path) -> None:
    """What a killed run left of a challenge tree, under :func:`_left_over`'s rules: another run,
    here or on another machine, may be filling its own tree now."""
    now = time.time()
    for p in out.iterdir():
        m = re.match(rf"^\.{CHALLENGE_DIR}\.{_LEFTOVER_TAG}$", p.name)
        if m and p.is_dir() and (m.group(2) is None or _left_over(p, m.group(1), int(m.group(2)), now)):
            shutil.rmtree(p, ignore_errors=True)


def write_failure(out: Path, name: str, record: dict) -> None:
    staged = staging_dir(out, name)
    staged.mkdir()
    try:
        (staged / RECORD_FILE).write_text(record_json(record), encoding="utf-8")
        replace_case_dir(staged, case_dir(out, name))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


# -- a process that died on a case ------------------------------------------------------------
#
# A crash inside an image library (a segmentation fault in a file's parser) or the system ending
# the process (memory) takes the whole run with it, with no Python left to record anything: a
# rerun would reach the same file and die the same way, for ever. So a case in hand has a small
# marker next to its folder (``.<case>.attempt.json``: the file's hash, the stage, this process)
# from before its file is read until its record is written; a Python error or Ctrl-C removes it.
# A marker left behind means a process died there: on the next run that file is first read in a
# child process, and a crash there fails the case with what happened instead of ending the run.
# Runs that died MAX_SCORING_DEATHS times while scoring a case (after reading it) fail it too.

ATTEMPT_SUFFIX = ".attempt.json"
STAGE_READING, STAGE_SCORING = "reading", "scoring"
MAX_SCORING_DEATHS = 3  # runs that may die while scoring one case before it is failed (two kill -9s may be a user's)
PROBE_TIMEOUT_S = 600.0  # reading a sweep in the child process (a few seconds for a full case)


def attempt_file(out: Path, name: str) -> Path:
    return out / CASES_DIR / f".{name}{ATTEMPT_SUFFIX}"


def read_attempt(out: Path, name: str) -> dict | None:
    """The marker a process left on case ``name`` (None when absent or not one of ours)."""
    try:
        data = json.loads(attempt_file(out, name).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT + "-attempt":
        return None
    return data


def mark_attempt(out: Path, name: str, fhash: str | None, stage: str, deaths: int = 0) -> None:
    """Say that this process has case ``name`` in hand at ``stage`` (``deaths``: earlier runs that
    died scoring it). Best effort: a marker that cannot be written only loses this protection."""
    record = {"format": RECORD_FORMAT + "-attempt", "file_hash": fhash, "stage": stage,
              "scoring_deaths": int(deaths), "host": _host_tag(), "pid": os.getpid(), "started_utc": utc_now()}
    # (written beside it under a name that says whose it is, then renamed: a process killed in
    # between left a temporary file nothing could tell from a live writer's, and it stayed for good)
    target = attempt_file(out, name)
    tmp = target.with_name(f"{target.name}.tmp-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json_text(record) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def clear_attempt(out: Path, name: str) -> None:
    """Remove this process's marker on case ``name`` (another live process's stays)."""
    marker = read_attempt(out, name)
    if marker is not None and (marker.get("host"), marker.get("pid")) != (_host_tag(), os.getpid()):
        return
    try:
        attempt_file(out, name).unlink()
    except OSError:
        pass


def died_on(marker: dict | None, fhash: str | None, path: Path | None = None) -> bool:
    """Whether ``marker`` was left by a process that died with this case (same file bytes) in hand:
    a process of this machine that no longer runs, or one of another machine whose marker
    (``path``) is :data:`FOREIGN_LEFTOVER_S` old (machines sharing one --out cannot see each
    other's processes: another machine's run may be at this case now)."""
    if marker is None or fhash is None or marker.get("file_hash") != fhash:
        return False
    pid = marker.get("pid")
    if marker.get("host") == _host_tag():
        return not (isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid))
    try:
        return path is not None and time.time() - path.stat().st_mtime >= FOREIGN_LEFTOVER_S
    except OSError:
        return False


def read_in_child(member: Path, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Read ``member`` as a sweep in a child process; why it could not be read there when the child
    crashed, was killed or did not finish (None when it read, or failed with a message of ours:
    that message comes again when this process reads it)."""
    import signal
    import subprocess
    import sys

    code = ("import sys\nfrom fetaliqa_core import io\n"
            "try:\n    io.load_sweep(sys.argv[1]).in_memory()\nexcept Exception:\n    pass\n")
    here = str(Path(__file__).resolve().parents[1])  # this package, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, "-c", code, str(member)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"reading it did not finish in {timeout:.0f} s"
    except OSError:
        return None  # no child could be started: read it here, as without a marker
    if done.returncode >= 0:
        return None
    try:
        name = signal.Signals(-done.returncode).name
    except ValueError:
        name = f"signal {-done.returncode}"
    return f"reading it ended the process ({name})"


# -- the combined table ----------------------------------------------------------------------

def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(round(value, 6))
    text = str(value)
    if column in _TEXT_COLUMNS:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


def table_rows(out: Path, names: Sequence[str], files: Sequence[str], settings: str | Sequence[str] | None,
               members: Sequence[Path] | None = None) -> list[dict]:
    """One row per case from its folder alone: its record, or ``missing`` / ``stale`` (scored
    with other settings, or its file changed since: ``members`` given, their :func:`file_stat`
    against the one recorded). ``settings``: the settings key, or the keys the run accepts."""
    if isinstance(settings, str):
        settings = (settings,)
    rows = []
    for k, (name, fname) in enumerate(zip(names, files)):
        rec = read_record(case_dir(out, name))
        if rec is None and foreign_folder(case_dir(out, name)):
            # a rerun cannot change it: it said 'missing … run again' for ever
            rows.append({"case": name, "file": fname, "status": STATUS_FAILED,
                         "error": f"{case_dir(out, name)} exists and was not written by FetalIQA (or lost its "
                                  "case.json); move it away, then run the same command again"})
            continue
        if rec is None:
            rows.append({"case": name, "file": fname, "status": STATUS_MISSING,
                         "error": ("its case.json is damaged; run the same command again to score it"
                                   if damaged_folder(case_dir(out, name))
                                   else "not scored yet; run the same command again to score it")})
            continue
        row = {c: rec.get(c) for c in TABLE_COLUMNS}
        row["case"], row["file"] = name, fname
        problem = folder_problem(case_dir(out, name), rec)
        if problem:
            # (a record whose own files say otherwise was shown as 'ok', with its own frame and AC)
            row["status"] = STATUS_STALE
            row["error"] = f"{problem}; run again to rescore"
        elif settings is not None and not settings_accepted(rec, settings):
            row["status"] = STATUS_STALE
            row["error"] = ("scored with other models, precision, threshold, pixel spacing or cascade; "
                            "run again to rescore")
        elif members is not None and rec.get("file_stat") and rec.get("file_stat") != file_stat(Path(members[k])):
            row["status"] = STATUS_STALE
            row["error"] = "the file changed since it was scored; run again to rescore"
        rows.append(row)
    return rows


def orphan_cases(out: Path, names: Sequence[str]) -> list[str]:
    """Case folders of ours in ``OUT/cases`` whose case is not among ``names`` (a file deleted or
    renamed since, or named otherwise now that a file was added beside it): sorted."""
    root = out / CASES_DIR
    try:
        found = [p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []
    wanted = set(names)
    return sorted(p.name for p in found if p.name not in wanted and read_record(p) is not None)


def write_table(out: Path, rows: Sequence[dict]) -> Path:
    import io

    buf = io.StringIO()
    w = csv_writer(buf, lineterminator="\n")  # no cell can be read as a formula by a spreadsheet
    w.writerow(TABLE_COLUMNS)
    for row in rows:
        w.writerow([_cell(c, row.get(c)) for c in TABLE_COLUMNS])
    out.mkdir(parents=True, exist_ok=True)
    path = out / TABLE_FILE
    atomic_write(path, buf.getvalue())
    return path


def count_statuses(rows: Sequence[dict]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# -- the challenge's output layout -----------------------------------------------------------

def _challenge_tree_is_ours(out: Path, target: Path) -> bool:
    """``OUT/challenge`` may be rebuilt: absent, empty, or what :func:`write_challenge_tree`
    makes (its predictions.json and per case the challenge's two files, in its layout), nothing
    else: files of the user's own there (notes, another program's files) are never deleted."""
    if not target.exists() and not target.is_symlink():
        return True
    if not target.is_dir() or target.is_symlink():
        return False
    entries = list(target.iterdir())
    if not entries:
        return True
    if not (target / PREDICTIONS_FILE).is_file():
        return False
    from fetaliqa_core import export

    layout = {rel for _src, rel in export.challenge_job_files(Path())}  # output/... of one case

    def a_case_of_ours(folder: Path) -> bool:  # the challenge's files of one case, nothing else
        if not folder.is_dir() or folder.is_symlink():
            return False
        return all(p.is_dir() and not p.is_symlink() or p.relative_to(folder).as_posix() in layout
                   for p in folder.rglob("*"))

    return all(e.name == PREDICTIONS_FILE or a_case_of_ours(e) for e in entries)


def write_challenge_tree(out: Path, rows: Sequence[dict]) -> tuple[Path, int, list[str]]:
    """``OUT/challenge``: the challenge's two files of every case whose row says ``ok``, copied
    from its folder (as :func:`fetaliqa_core.export.write_challenge_files` wrote them) into the
    challenge's output layout, ``<case>/output/...``, with ``predictions.json`` listing the
    cases as the organisers' evaluator reads them. Rebuilt whole from the case folders each
    time and put in place in one rename. Returns (the folder, cases in it, cases left out)."""
    from fetaliqa_core import export
    from fetaliqa_core.files import write_json

    target = out / CHALLENGE_DIR
    if not _challenge_tree_is_ours(out, target):
        raise FetalIQAError(f"{target}: exists and was not written by FetalIQA; it is left as it is. "
                            "Move it away or choose another --out.")
    # What a killed run left, under the rules of the case folders' leftovers: another run of this
    # machine or of another one may be filling its own tree right now (deleting it left a partial
    # challenge/ in place, reported as written).
    _clean_challenge_leftovers(out)
    staged = out / f".{CHALLENGE_DIR}.tmp-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    jobs, left_out = [], []
    try:
        for row in rows:
            folder = case_dir(out, row["case"])
            files = export.challenge_job_files(folder)
            # (only those written with the case's record: another run's, copied beside it, disagreed
            # with the table's chosen frame in half the cases of a merge)
            if row["status"] != STATUS_OK or not challenge_files_of_record(folder, read_record(folder)):
                left_out.append(row["case"])
                continue
            for src, rel in files:
                dst = staged / row["case"] / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            jobs.append(export.challenge_job(row["case"], row["file"]))
        write_json(staged / PREDICTIONS_FILE, jobs)
        swap_in_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return target, len(jobs), left_out


# -- reading ahead ---------------------------------------------------------------------------

@dataclass
class Item:
    """One case of this rank's shard, as the reader thread hands it over."""

    index: int
    name: str
    member: Path
    key: str | None = None
    fhash: str | None = None
    fstat: str | None = None  # file_stat() taken before hashing
    finished: bool = False
    sweep: object | None = None
    error: str | None = None
    deaths: int = 0  # earlier runs that died while scoring it (its marker says)
    why: str | None = None  # why a case scored before is scored again (rescore_reason)


#: How long a stopped read-ahead waits for its readers to finish the sweeps in their hands (each
#: clears its case's attempt marker when done) before it leaves them behind.
READ_AHEAD_GRACE_S = 3.0


def read_ahead(items: Sequence[Item], prepare: Callable[[Item], None], depth: int,
               workers: int | None = None) -> Iterator[Item]:
    """Yield ``items`` in order after ``prepare`` filled each in.

    With ``depth`` > 0, up to ``depth`` items are prepared ahead of the consumer by up to
    ``workers`` reader threads (default ``min(depth, 2)``): decoding, hashing and file reading
    release the GIL, so they overlap the model and each other. Memory stays bounded at ``depth``
    prepared items plus the one in the consumer's hands. ``prepare`` records its own errors in
    the item; it must not raise (if it does, the error is raised here, in the consumer).

    When the consumer stops (Ctrl-C, SIGTERM, an error) the readers are given
    :data:`READ_AHEAD_GRACE_S` to finish, then left behind: they are daemon threads, so one stuck
    in a read that never ends (a pipe, a device, a network file system that hangs) does not keep
    the process alive. A thread pool's workers were waited for without end, so "interrupted" was
    printed and the process went on reading.
    """
    if depth <= 0:
        for item in items:
            prepare(item)
            yield item
        return
    import queue
    from collections import deque

    jobs: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    class Job:
        __slots__ = ("item", "done", "error")

        def __init__(self, item: Item) -> None:
            self.item, self.done, self.error = item, threading.Event(), None

    def reader() -> None:
        while not stop.is_set():
            job = jobs.get()
            if job is None or stop.is_set():
                return
            try:
                prepare(job.item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                job.error = exc
            finally:
                job.done.set()

    threads = [threading.Thread(target=reader, name=f"fetaliqa-read-ahead-{k}", daemon=True)
               for k in range(max(1, workers or min(depth, 2)))]
    for t in threads:
        t.start()
    todo = iter(items)
    pending: deque = deque()

    def submit(item: Item) -> None:
        job = Job(item)
        pending.append(job)
        jobs.put(job)

    try:
        for item in todo:
            submit(item)
            if len(pending) >= depth:
                break
        while pending:
            job = pending.popleft()
            job.done.wait()
            if job.error is not None:
                raise job.error
            nxt = next(todo, None)
            if nxt is not None:
                submit(nxt)
            yield job.item
    finally:
        stop.set()  # (the sweeps not yet started are not read)
        for _ in threads:
            jobs.put(None)
        deadline = time.monotonic() + READ_AHEAD_GRACE_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


# -- heartbeats: rank 0 waits for the others without hanging on a dead one ---------------------

def _state_file(out: Path, run_id: str, rank: int) -> Path:
    return out / STATE_DIR / run_id / f"rank-{rank}.json"


class Heartbeat:
    """Writes ``{beat, done, counts}`` for this rank every ``interval`` seconds while it lives."""

    def __init__(self, out: Path, run_id: str, rank: int, interval: float = HEARTBEAT_SECONDS) -> None:
        self.path = _state_file(out, run_id, rank)
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._beat = 0
        self._done = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="fetaliqa-heartbeat", daemon=True)

    def _write(self) -> None:
        with self._lock:
            self._beat += 1
            text = json.dumps({"beat": self._beat, "done": self._done, "counts": self.counts})
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, text)
            except OSError:
                pass  # a missed beat is tolerated; the timeout is many beats long

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def start(self) -> "Heartbeat":
        self._write()
        self._thread.start()
        return self

    def finish(self, counts: dict[str, int]) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.counts = dict(counts)
        self._done = True
        self._write()


def wait_for_ranks(out: Path, run_id: str, ranks: Sequence[int], timeout: float,
                   poll: float = 0.5, clock: Callable[[], float] = time.monotonic) -> tuple[dict, list[int]]:
    """Wait until every rank in ``ranks`` reports done, or its heartbeat has not changed for
    ``timeout`` seconds (measured on this machine's clock, so machines need not agree on time).

    Returns ``(counts per finished rank, ranks taken as dead)``.
    """
    last_seen: dict[int, tuple[str | None, float]] = {r: (None, clock()) for r in ranks}
    finished: dict[int, dict] = {}
    dead: list[int] = []
    while True:
        for r in list(last_seen):
            try:
                text = _state_file(out, run_id, r).read_text(encoding="utf-8")
                state = json.loads(text)
            except (OSError, ValueError):
                text, state = None, None
            if isinstance(state, dict) and state.get("done"):
                finished[r] = state.get("counts") or {}
                del last_seen[r]
                continue
            prev, since = last_seen[r]
            now = clock()
            if text != prev:
                last_seen[r] = (text, now)
            elif now - since > timeout:
                dead.append(r)
                del last_seen[r]
        if not last_seen:
            return finished, sorted(dead)
        time.sleep(poll)


def remove_state(out: Path, run_id: str | None = None) -> None:
    """Heartbeats of run ``run_id`` (rank 0, at the end) and of earlier runs that were killed, by
    :data:`FOREIGN_LEFTOVER_S`: another torchrun launch on the same --out may be running now, and
    removing its heartbeats made its rank 0 take its other ranks for dead), or sooner when that
    run's rank 0 was a process of this machine that is gone (:func:`_run_over_here`). ``run_id``
    None (a run of one process, which has none): the killed runs' only."""
    root = out / STATE_DIR
    if not root.is_dir():
        return
    if run_id is not None:
        shutil.rmtree(root / run_id, ignore_errors=True)
    now = time.time()
    try:
        for folder in root.iterdir():
            stamps = [p.stat().st_mtime for p in folder.iterdir()] if folder.is_dir() else []
            if folder.is_dir() and (now - max(stamps, default=0.0) >= FOREIGN_LEFTOVER_S or _run_over_here(folder)):
                shutil.rmtree(folder, ignore_errors=True)
        root.rmdir()  # only when nothing is left in it
    except OSError:
        pass


def _run_over_here(folder: Path) -> bool:
    """Whether the run of state folder ``folder`` was started on this machine by a rank 0 that is
    no longer alive (its plan names the host and process): a killed run's folder stayed for 6
    hours after a rerun had finished the archive."""
    try:
        plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(plan, dict) or plan.get("host") != hostname():
        return False
    pid = plan.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not _pid_alive(pid)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def hostname() -> str:
    return socket.gethostname()
