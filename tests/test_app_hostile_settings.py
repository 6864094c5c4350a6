"""The app's start-up survives any settings file, and a reviewer's name is shown as text, never
interpreted as markup."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtWidgets import QMessageBox

from app.settings import AppSettings
from fetaliqa_core import paths

FUZZ = settings(max_examples=int(os.environ.get("FETALIQA_FUZZ_EXAMPLES", "60")), deadline=3000,
                derandomize=not os.environ.get("FETALIQA_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])

_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.just(10**400) | st.floats() | st.text(max_size=20),
                      lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                      max_leaves=8)
_FIELDS = ["recent_files", "geometry", "window_state", "model", "cls_bundle", "seg_bundle", "base_weights",
           "device", "reviewer", "opacity", "fps", "review_db", "thresholds"]


def _write(text: str) -> None:
    path = AppSettings.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _valid(s: AppSettings) -> None:
    assert math.isfinite(s.opacity) and 0 <= s.opacity <= 1
    assert math.isfinite(s.fps) and 1 <= s.fps <= 120
    assert s.device in ("auto", "cpu", "cuda", "mps") and s.model in ("demo", "custom")
    for text in (s.geometry, s.window_state, s.cls_bundle, s.seg_bundle, s.base_weights, s.reviewer, s.review_db,
                 *s.recent_files):
        assert isinstance(text, str) and "\0" not in text
    assert all(isinstance(k, str) and 0 <= v <= 1 for k, v in s.thresholds.items())


@FUZZ
@given(data=st.dictionaries(st.sampled_from(_FIELDS), _VALUE, max_size=8))
def test_any_settings_values_give_usable_settings(data):
    _write(json.dumps(data))
    _valid(AppSettings.load())


@pytest.mark.parametrize("text", [
    '{"opacity": NaN, "fps": Infinity, "device": "quantum", "recent_files": [1, null, "a\\u0000b"]}',
    '{"fps": -1e308, "opacity": 1e308, "model": "evil", "thresholds": {"x": NaN, "y": 2}}',
    "[" * 100_000 + "]" * 100_000,
    "\xff\xfe not json",
    '{"reviewer": "' + "x" * 100_000 + '"}',
    '{"opacity": 1' + "0" * 400 + ', "fps": -1' + "0" * 400 + ', "thresholds": {"a": 1' + "0" * 400 + '}}',
])
def test_settings_file_with_nan_or_junk_gives_defaults_where_wrong(text):
    _write(text)
    _valid(AppSettings.load())


def test_app_starts_with_a_hostile_settings_file(qtbot, monkeypatch):
    from app.main_window import MainWindow

    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Ok))
    _write('{"opacity": NaN, "fps": NaN, "geometry": "!!not base64!!", "window_state": "AAAA", '
           '"reviewer": "<img src=x onerror=alert(1)><b>Boss</b>", "recent_files": ["/nope/\\u0000.mha"]}')
    win = MainWindow(settings=AppSettings.load())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    text = win.review.reviewer_label.text()
    assert "&lt;img" in text and "<img" not in text and "&lt;b&gt;Boss" in text


def test_settings_folder_that_cannot_be_created_gives_defaults(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file")
    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "home"))
    s = AppSettings.load()
    _valid(s)
    s.save()  # never raises
    assert not paths.config_dir().is_dir()



def test_settings_on_a_read_only_disk_say_the_disk_is_read_only(monkeypatch):
    """With a read-only home the settings folder could not be made, and saving said "(No such file
    or directory)", the missing folder, while the warnings before it said the disk is read-only."""
    import errno
    import pathlib

    folder = paths.config_dir()
    folder.rmdir()
    mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    s = AppSettings.load()
    s.reviewer = "someone"
    said = s.save()
    assert "could not be saved" in said and "(the disk is read-only)" in said, said


def test_a_damaged_settings_file_is_set_aside_and_the_window_says_so(qtbot, monkeypatch):
    """A settings file cut off mid-write was replaced by the defaults on close, without a word: the
    user's model choice was gone. It is now renamed beside itself, and the window says so in one
    line; a file whose values are only partly unusable keeps the rest."""
    from app.main_window import MainWindow

    seen = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda parent, title, text, *a, **k: seen.append(text)))
    damaged = '{"recent_files": ["/tmp/a.mha"], "model": "custom", "cls_bundle": "/my/runs/cls/bundle", "opac'
    _write(damaged)
    path = AppSettings.path()
    s = AppSettings.load()
    assert s == AppSettings() and not path.exists()
    (aside,) = path.parent.glob(path.name + ".damaged-*")
    assert aside.read_text(encoding="utf-8") == damaged
    win = MainWindow(settings=s)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: bool(seen), timeout=3000)
    assert len(seen) == 1 and "\n" not in seen[0]
    assert seen[0].startswith("The settings file is not valid JSON")
    assert seen[0].endswith(f"default settings (models, recent files, layout); the file was set aside as {aside}.")
    s.save()
    assert aside.read_text(encoding="utf-8") == damaged  # saving writes a new file, not over the old one

    _write('{"model": "custom", "cls_bundle": "/my/bundle", "opacity": NaN}')
    s = AppSettings.load()
    assert s.model == "custom" and s.cls_bundle == "/my/bundle" and s.opacity == AppSettings().opacity
    assert "opacity" in s.problem and len(list(path.parent.glob(path.name + ".damaged-*"))) == 2

    _write('{"model": "custom"}')  # a sound file: nothing said, nothing moved
    s = AppSettings.load()
    assert s.model == "custom" and s.problem == "" and path.exists()


def test_a_damaged_settings_file_that_cannot_be_set_aside_is_not_overwritten(monkeypatch):
    from pathlib import Path

    _write("\x00 not settings")
    monkeypatch.setattr(Path, "rename", lambda self, target: (_ for _ in ()).throw(PermissionError(13, "denied")))
    s = AppSettings.load()
    assert "left as it is" in s.problem
    s.save()
    assert AppSettings.path().read_text(encoding="utf-8") == "\x00 not settings"


def test_a_device_the_command_line_takes_reads_back(tmp_path):
    """--device cuda:1 (which the command line takes) was saved, then read back as a damaged value:
    the file was set aside on every start, and the device went back to auto."""
    s = AppSettings(device="cuda:1")
    s.save()
    again = AppSettings.load()
    assert again.device == "cuda:1" and not again.problem
    assert not list(AppSettings.path().parent.glob(AppSettings.path().name + ".damaged-*"))


def test_a_settings_file_that_is_a_link_is_never_renamed(tmp_path):
    """A settings file kept elsewhere (a dotfiles folder) and linked: one odd value renamed the
    link and the next save wrote a plain file in its place."""
    kept = tmp_path / "dotfiles" / "fetaliqa.json"
    kept.parent.mkdir()
    kept.write_text(json.dumps({"opacity": 7.5}), encoding="utf-8")
    link = AppSettings.path()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(kept)
    s = AppSettings.load()
    assert "opacity" in s.problem and "left as it is" in s.problem
    s.save()
    assert link.is_symlink() and json.loads(kept.read_text(encoding="utf-8")) == {"opacity": 7.5}


def test_a_valid_settings_file_that_is_a_link_is_saved_through_the_link(tmp_path):
    """A valid settings file kept elsewhere and linked was read, then replaced on the first save
    by a plain file: the link was gone and later changes never reached the file kept elsewhere."""
    kept = tmp_path / "dotfiles" / "fetaliqa.json"
    kept.parent.mkdir()
    kept.write_text(json.dumps({"opacity": 0.3, "reviewer": "ann"}), encoding="utf-8")
    link = AppSettings.path()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(kept)
    s = AppSettings.load()
    assert s.reviewer == "ann" and not s.problem
    s.fps = 30.0
    assert s.save() == ""
    assert link.is_symlink() and link.resolve() == kept.resolve()
    stored = json.loads(kept.read_text(encoding="utf-8"))
    assert stored["fps"] == 30.0 and stored["reviewer"] == "ann"


def test_a_newer_versions_own_settings_are_kept_on_save(tmp_path):
    """A settings file written by a newer version, with keys this one does not know: read without
    a word, and every one of them dropped by the next save."""
    _write(json.dumps({"version": 99, "future_option": {"a": [1, 2]}, "reviewer": "bo"}))
    s = AppSettings.load()
    assert s.reviewer == "bo" and not s.problem
    s.opacity = 0.2
    assert s.save() == ""
    stored = json.loads(AppSettings.path().read_text(encoding="utf-8"))
    assert stored["version"] == 99 and stored["future_option"] == {"a": [1, 2]}
    assert stored["opacity"] == 0.2 and stored["reviewer"] == "bo"


def test_a_pipe_in_place_of_the_settings_file_is_set_aside_and_said(tmp_path):
    """A named pipe where the settings file goes was ignored without a word, then replaced by
    a file on the next save."""
    path = AppSettings.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    s = AppSettings.load()
    assert "no regular file" in s.problem and s.aside is not None and s.aside.name.startswith(path.name)
    assert s.save() == "" and path.is_file()


def test_two_windows_keep_each_others_settings(tmp_path):
    """Each window wrote the settings it loaded at start whole: the one closing last dropped what the
    other saved meanwhile (its `gui --db` database, so verdicts split across two files; a threshold;
    recent files). A save now writes only what its window changed over the file as it is then."""
    first, second = AppSettings.load(), AppSettings.load()
    first.review_db = str(tmp_path / "team.sqlite3")
    first.thresholds["models-a"] = 0.3
    first.add_recent(tmp_path / "a.mha")
    first.save()
    second.thresholds["models-b"] = 0.6
    second.add_recent(tmp_path / "b.mha")
    second.opacity = 0.7
    second.save()
    s = AppSettings.load()
    assert s.review_db == str(tmp_path / "team.sqlite3") and s.opacity == 0.7
    assert s.thresholds == {"models-a": 0.3, "models-b": 0.6}
    assert s.recent_files == [str((tmp_path / "b.mha").resolve()), str((tmp_path / "a.mha").resolve())]
    # what a window took away goes (a threshold back at the models' own, a recent file gone), the rest stays
    first.thresholds.pop("models-a")
    first.recent_files.remove(str((tmp_path / "a.mha").resolve()))
    first.save()
    s = AppSettings.load()
    assert s.thresholds == {"models-b": 0.6} and s.recent_files == [str((tmp_path / "b.mha").resolve())]
    assert s.review_db == str(tmp_path / "team.sqlite3") and s.opacity == 0.7


def test_a_file_opened_in_one_window_stays_at_the_top_of_recent_files_when_another_saves(tmp_path):
    """Two windows with a full list of recent files: the first opened X and saved, the second opened
    Y and saved, and X was gone (this window's list came first, whole, and pushed it off the end).
    What each opened since leads now, newest saver first."""
    old = [str(tmp_path / f"old{i}.mha") for i in range(10)]
    start = AppSettings.load()
    start.recent_files = list(old)
    start.save()
    first, second = AppSettings.load(), AppSettings.load()
    first.add_recent(tmp_path / "x.mha")
    first.save()
    second.add_recent(tmp_path / "y.mha")
    second.save()
    recent = AppSettings.load().recent_files
    assert recent[:3] == [str((tmp_path / "y.mha").resolve()), str((tmp_path / "x.mha").resolve()), old[0]]
    assert len(recent) == 10


def test_a_settings_file_damaged_before_a_save_is_said_and_the_window_told_once():
    """A file damaged between a window's load and its save was set aside without a word (the save
    returned "" as if nothing had happened); a save that failed on a timer or a menu's change was
    said nowhere. Both are said, and the window's reporter is told each reason once."""
    told = []
    start = AppSettings.load()
    start.recent_files, start.thresholds = ["/tmp/a.mha", "/tmp/b.mha"], {"models-a": 0.9}
    start.save()
    s = AppSettings.load()
    s.report = told.append
    s.opacity = 0.6
    AppSettings.path().parent.mkdir(parents=True, exist_ok=True)
    AppSettings.path().write_text("{damaged", encoding="utf-8")
    why = s.save()
    assert "set aside as" in why and told == [why]
    saved = AppSettings.load()  # this window's settings whole, not only what it changed
    assert saved.opacity == 0.6 and saved.recent_files == ["/tmp/a.mha", "/tmp/b.mha"]
    assert saved.thresholds == {"models-a": 0.9}
    AppSettings.path().unlink()
    AppSettings.path().mkdir()  # a folder where the file goes: cannot be written
    s.opacity = 0.5
    first, again = s.save(), s.save()
    assert "could not be saved" in first and first == again and told == [why, first]


def test_a_file_opened_again_moves_to_the_top_of_the_saved_recent_files(tmp_path):
    """Merging on save kept a file opened again where the file on disk had it: the list read
    [c, b, a] after a was opened again (the window showed [a, c, b])."""
    a, b, c = (str((tmp_path / f"{n}.mha").resolve()) for n in "abc")
    start = AppSettings.load()
    start.recent_files = [c, b, a]
    start.save()
    one, two = AppSettings.load(), AppSettings.load()
    one.add_recent(a)
    one.save()
    assert AppSettings.load().recent_files == [a, c, b]
    two.add_recent(b)  # another window, loaded before, opens b again
    two.save()
    assert AppSettings.load().recent_files == [b, a, c]
