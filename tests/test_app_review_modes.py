"""Review options and remembered settings: a queue of best frames only, a blinded mode (the
reviewer's verdict before the model's call is shown), the flagged panel's and the queue's
disagreement counts explained, and the threshold remembered per model."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from app.settings import AppSettings
from fakes import fake_models
from review_window import press, scored_window


@pytest.fixture(autouse=True)
def no_modal(monkeypatch):
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Ok))


def test_best_frames_only_queue(qtbot):
    win = scored_window(qtbot, AppSettings(reviewer="bo"))
    panel = win.review
    assert panel.start()
    panel.queue_combo.setCurrentIndex(panel.queue_combo.findData("all"))
    assert len(win.model.queue) == win.model.n_frames
    panel.best_only.setChecked(True)
    fl = win.model.flags
    best = sorted({b for b in fl.best if b is not None} | ({fl.chosen} if fl.chosen is not None else set()))
    assert win.model.queue == best and win.model.frame == best[0]
    assert panel.progress_label.text().endswith(f"0 / {len(best)}</b> reviewed") or \
        f"0 / {len(best)}" in panel.progress_label.text()
    press(win, "1")
    press(win, "\n")
    assert win.model.frame == best[1] and f"1 / {len(best)}" in panel.progress_label.text()
    panel.best_only.setChecked(False)
    assert len(win.model.queue) == win.model.n_frames


def test_blinded_review_hides_the_models_call_until_the_verdict(qtbot):
    win = scored_window(qtbot, AppSettings(reviewer="cy"))
    panel = win.review
    assert panel.start()
    panel.blinded.setChecked(True)
    best = next(b for b in win.model.flags.best if b is not None)
    win.model.set_frame(best)
    QApplication.processEvents()
    # nothing of the model's call: no overlay, no AC ellipse, no scores, curve and flags hidden
    assert not win.frame_view.overlay.isVisible() and not win.frame_view.ellipse.isVisible()
    assert "blinded" in win.frame_view.corner_tr.text() and "classifier" not in win.frame_view.corner_tr.text()
    assert "chosen" not in win.frame_view.corner_bl.text() and "best of" not in win.frame_view.corner_bl.text()
    assert not win.curve.isVisible() and not win.flagged.isVisible()
    assert not win.flagged_dock.isVisible()  # not an empty title bar either
    assert "hidden" in win.status_ac.text()
    messages = []
    panel.message.connect(messages.append)
    panel.choose("optimal")
    panel.save_and_next()
    assert "The model's call: flagged" in messages[-1]
    # the reviewed frame now shows the model's call
    win.model.set_frame(best)
    QApplication.processEvents()
    assert best in win.model.verdicts and not panel.hides_model()
    assert win.frame_view.overlay.isVisible() and "classifier" in win.frame_view.corner_tr.text()
    panel.blinded.setChecked(False)
    assert win.curve.isVisible() and win.flagged.isVisible() and "AC" in win.status_ac.text()
    assert win.flagged_dock.isVisible()


def test_blinded_review_does_not_jump_to_the_models_frames(qtbot):
    """b, n, p and the toolbar's Flagged / Best frame went straight to the frames the model singled
    out while its call was hidden."""
    win = scored_window(qtbot, AppSettings(reviewer="cy"))
    panel = win.review
    assert panel.start()
    panel.blinded.setChecked(True)
    win.model.set_frame(0)
    QApplication.processEvents()
    assert 0 not in win.model.flags.best and 0 not in set(win.model.flags.candidates)
    for key in "bnp":
        press(win, key)
        assert win.model.frame == 0, key
    assert "Blinded review" in win.status_message.full_text()
    assert not win.act_best.isEnabled() and not win.act_next_flag.isEnabled()
    panel.blinded.setChecked(False)
    press(win, "b")
    assert win.model.frame in win.model.flags.best and win.act_best.isEnabled()


def test_disagreement_counts_of_panel_and_queue_are_explained(qtbot):
    """The flagged panel lists the frames where the two models disagree; the review queue holds
    those plus the frames where a verdict disagrees with the model. Both say so, and the counts
    add up."""
    win = scored_window(qtbot, AppSettings(reviewer="di"))
    panel = win.review
    assert panel.start()
    models_disagree = win.flagged.rows("disagreements")
    title = win.flagged._groups["disagreements"].text(0)
    assert title == f"Models disagree ({len(models_disagree)})"
    panel.queue_combo.setCurrentIndex(panel.queue_combo.findData("disagreements"))
    assert "you and the model" in panel.queue_combo.currentText()
    assert win.model.queue == models_disagree  # no verdict yet: the same frames
    # a verdict that contradicts the model's call on a frame the models agree on joins the queue
    cand = set(win.model.flags.candidates)
    frame = next(f for f in range(win.model.n_frames) if f in cand and f not in models_disagree)
    win.model.set_frame(frame)
    panel.choose("not_usable")
    panel.save_and_next()
    panel.queue_combo.setCurrentIndex(panel.queue_combo.findData("candidates"))
    panel.queue_combo.setCurrentIndex(panel.queue_combo.findData("disagreements"))
    assert sorted(win.model.queue) == sorted(models_disagree + [frame])


def test_threshold_remembered_per_model(qtbot):
    settings = AppSettings()
    win = scored_window(qtbot, settings)
    own = win.model.thresholds.model
    win.curve.threshold_moved.emit(0.73)  # the user drags the line
    assert win.model.threshold == pytest.approx(0.73)
    key = win._models_key()
    assert settings.thresholds[key] == pytest.approx(0.73)
    win.close()
    # the same models in a new window start at the remembered threshold
    again = scored_window(qtbot, AppSettings.load())
    assert again.model.threshold == pytest.approx(0.73)
    # other models start at their own
    from fakes import FakeLoadedModels, FakeModel

    other = FakeLoadedModels(FakeModel("cls", 0.0, 8), FakeModel("seg", 0.0, 8))
    other.cls.bundle_hash = "another-classifier"
    again.use_models(other)
    assert again.model.threshold == pytest.approx(again.model.thresholds.model)
    # back at the model's own: forgotten
    again.use_models(fake_models())
    assert again.model.threshold == pytest.approx(0.73)
    again.curve.threshold_moved.emit(own)
    qtbot.waitUntil(lambda: key not in AppSettings.load().thresholds, timeout=5000)


def test_dragging_the_threshold_writes_the_settings_once_it_rests(qtbot, monkeypatch):
    """Each drag event wrote and synced the settings file on the window's thread (dozens a
    second); now the file is written once the line rests, and on closing."""
    settings = AppSettings()
    win = scored_window(qtbot, settings)
    saves = []
    real = settings.save
    monkeypatch.setattr(settings, "save", lambda: saves.append(1) or real())
    for v in np.linspace(0.6, 0.8, 30):
        win.curve.threshold_moved.emit(float(v))
    assert saves == [] and win.model.threshold == pytest.approx(0.8)
    qtbot.waitUntil(lambda: len(saves) == 1, timeout=5000)
    assert AppSettings.load().thresholds[win._models_key()] == pytest.approx(0.8)
    win.curve.threshold_moved.emit(0.7)
    win.close()  # before the pause: the close writes it
    assert AppSettings.load().thresholds[win._models_key()] == pytest.approx(0.7)


def test_the_review_queue_follows_a_threshold_once_it_rests(qtbot):
    """The queues came from the run stored before the threshold moved: a frame flagged only at the
    new threshold was not in the Candidates queue."""
    win = scored_window(qtbot, AppSettings(reviewer="cy"))
    panel = win.review
    assert panel.start()
    before = set(win.model.flags.candidates)
    p_cls = win.model.results.p_cls
    low = float(np.nanmin(p_cls[p_cls > 0])) + 1e-3
    win.curve.threshold_moved.emit(low)  # as a drag of the line does
    newly = sorted(set(win.model.flags.candidates) - before)
    assert newly
    qtbot.waitUntil(lambda: newly[0] in win.model.queue, timeout=5000)


def test_the_review_controls_are_reachable_from_the_keyboard(qtbot):
    """The panel's queue, 'Best frames only', 'Blinded', reviewer and export controls take no
    keyboard focus (so that arrows and digits reach the frame): a trainer without a mouse could
    not switch queues or start a blinded review. The Review menu (Alt+R) holds them all."""
    win = scored_window(qtbot, AppSettings(reviewer="cy"))
    panel = win.review
    titles = [a.text() for a in win.menuBar().actions()]
    assert "&Review" in titles
    win.sync_review_menu()
    assert win.act_review_start.isEnabled() and win.act_review_blinded.isEnabled() == panel.blinded.isEnabled()
    win.act_review_start.trigger()
    assert panel.session is not None
    win.sync_review_menu()
    assert not win.act_review_start.isEnabled()
    win.act_review_blinded.trigger()
    assert panel.blinded.isChecked() and "hidden" in win.status_ac.text()
    kinds = list(win.review_queue_actions)
    win.review_queue_actions[kinds[-1]].trigger()
    assert panel.queue_combo.currentData() == kinds[-1] == win.model.queue_kind
    win.act_review_blinded.trigger()
    win.act_review_best_only.trigger()
    assert not panel.blinded.isChecked() and panel.best_only.isChecked()
    win.sync_review_menu()  # the menu shows the panel's state, however it was set
    panel.best_only.setChecked(False)
    win.sync_review_menu()
    assert not win.act_review_best_only.isChecked() and win.review_queue_actions[kinds[-1]].isChecked()


def test_a_remembered_threshold_is_said_in_the_answer_and_the_models_own_can_be_put_back(qtbot):
    """A line dragged in an earlier window is remembered for these models and decided a later
    headless run's answer (`gui --exit-when-scored --save-scores`), whose printed answer read as the
    models' own; and only dragging the line back exactly restored theirs. The answer says the
    threshold in use and the models' own; Scoring > Use the models' threshold puts theirs back and
    forgets the moved one."""
    from app.cli_demo import answer_line

    settings = AppSettings()
    win = scored_window(qtbot, settings)
    own = win.model.thresholds.model
    assert "set in the window earlier" not in answer_line(win)
    win.curve.threshold_moved.emit(0.93)
    key = win._models_key()
    win.close()
    again = scored_window(qtbot, AppSettings.load())
    assert again.model.threshold == pytest.approx(0.93)
    said = answer_line(again)
    assert "threshold 0.93 on p_cls, set in the window earlier" in said and f"(theirs: {own:.2f})" in said
    again.act_threshold_own.trigger()
    assert again.model.threshold == pytest.approx(own)
    assert "set in the window earlier" not in answer_line(again)
    again.close()
    assert key not in AppSettings.load().thresholds
