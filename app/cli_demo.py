"""``fetaliqa demo`` (= ``make demo``): the viewer on the demo sweep with the demo model.

With a display the window opens and scoring starts. Without one (no DISPLAY/WAYLAND_DISPLAY
on Linux, or QT_QPA_PLATFORM=offscreen) the same window is rendered offscreen until every
frame is scored; then the scores (``frames.csv``, ``summary.json``, as ``fetaliqa score``
writes them) and a screenshot are saved in a folder that is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fetaliqa_core.cli._args import positive_seconds
from fetaliqa_core.models.options import add_model_options, model_choice_from_args

HELP = "Open the viewer on the demo sweep with the demo model (headless: write scores and a screenshot)."

OUTPUT_FOLDER = "demo-output"
PROGRESS_SECONDS = 10.0  # headless into a file or pipe: a progress line this often


def answer_line(window) -> str:
    """What the run found, as the window's status bar says it: the chosen frame, AC and GA, then
    (indented) why the AC is doubtful or not shown and the demonstration notice, as its tooltip does."""
    window.refresh()
    window.update_case_status()  # the bar as the results stand now, not as last drawn
    m = window.model
    chosen = m.flags.chosen
    where = ""
    if chosen is not None and chosen >= 0:
        k = m.sweep_index(chosen)
        kind = m.sweep_kinds[k] if k < len(m.sweep_kinds) else "unknown"
        where = f" (sweep {k + 1}{'' if kind == 'unknown' else ', ' + kind})"
    text = window.status_ac.text() or "no frame chosen"
    # the reading's note and the notice, as the tooltip gives them (not the answer again)
    why = [line for line in window.status_ac.toolTip().splitlines() if line.strip() and line.strip() != text]
    if m.demo_notice and m.demo_notice not in why:  # (also when no frame passes: the numbers are the models')
        why.append(m.demo_notice)
    # a threshold moved in an earlier window is remembered for these models and decides this answer:
    # said, as `score` says a --threshold (a headless run's answer read as the models' own otherwise)
    t = getattr(m, "thresholds", None)
    if t is not None and t.changed:
        why.append(f"threshold {t.value:.2f} on {t.score}, set in the window earlier and remembered for these "
                   f"models (theirs: {t.model:.2f}); Scoring > Use the models' threshold puts theirs back")
    return "\n  ".join([text + where, *why])


def add_arguments(parser) -> None:
    add_model_options(parser, bundles=False, cascade=True)
    parser.add_argument("--out", type=Path, default=None,
                        help="headless output folder (default: <cache>/demo-output)")
    parser.add_argument("--headless", action="store_true",
                        help="render offscreen and write the outputs even when a display exists")
    parser.add_argument("--max-seconds", type=positive_seconds, default=None, metavar="N",
                        help="headless: stop scoring after N seconds and write what was scored")


def run(args) -> int:
    from app.cli import (checked_screenshot, display_available, display_problem, render_offscreen_instead,
                         run_window, save_scores)
    from fetaliqa_core import paths, synth
    from fetaliqa_core.errors import FetalIQAError

    headless = bool(args.headless or not display_available())
    problem = display_problem(headless)
    if problem is not None:
        # An X display without the libraries Qt needs, no compositor at WAYLAND_DISPLAY, a
        # QT_QPA_PLATFORM that cannot start here: say why, and render offscreen instead.
        print(f"fetaliqa: {problem}", file=sys.stderr)
        print("fetaliqa: rendering the demo offscreen instead (no window).", file=sys.stderr, flush=True)
        headless = True
        render_offscreen_instead()
    if not synth.demo_case_exists():
        paths.required_cache_dir("The demo sweep")  # one line naming FETALIQA_HOME when it cannot be written
        print("making the demo sweep (synthetic, once: it is kept in the cache)…", flush=True)
    sweep_path = synth.demo_sweep_path()
    print(f"demo sweep: {sweep_path}", flush=True)
    choice = model_choice_from_args(args)  # the demo model on --device, in --precision
    if not headless:
        from app.cli import end_without_loading_models

        try:
            outcome = run_window(sweep_path, choice, headless=False)
        except KeyboardInterrupt:
            end_without_loading_models(130, "fetaliqa: interrupted")
            raise
        end_without_loading_models(outcome.code)
        return outcome.code

    from fetaliqa_core.cli.score import check_out_folder

    if args.out:
        out_dir = Path(args.out).expanduser()
    else:
        out_dir = paths.required_cache_dir("Writing the demo's outputs", ", or give them a folder with --out DIR")
        out_dir = out_dir / OUTPUT_FOLDER
    check_out_folder(out_dir)  # created by the first file written into it
    shot = checked_screenshot(out_dir / "screenshot.png", what="the screenshot")  # a file of that name that is no PNG stays
    # (after the line saying the demo renders offscreen instead, not again; and with --headless
    # a display may well be there)
    print(f"scoring {sweep_path.name}" + ("…" if problem is not None else " offscreen (no window)…"), flush=True)
    from app.cli import end_without_loading_models
    from fetaliqa_core.cli._args import shown

    try:
        outcome = run_window(sweep_path, choice, screenshot=shot, exit_when_scored=True,
                             max_seconds=args.max_seconds, headless=True, keep_window=True,
                             progress_every=PROGRESS_SECONDS)
    except KeyboardInterrupt:
        # (the results cache keeps the batches scored: a run stopped at 105 of 840 frames went on
        # from there, but said only "interrupted")
        end_without_loading_models(130, "fetaliqa: interrupted; the frames scored so far are kept: run the demo "
                                        "again to go on from there")
        raise
    try:
        written = save_scores(outcome.window, out_dir)
        answer = answer_line(outcome.window)
        held = outcome.window.model.results
        # (a cascade stopped in its student's pass has frames scored but no answer yet)
        done = (held.n_done, held.n_frames) if held is not None else (0, 0)
        cascade = getattr(getattr(outcome.window, "models", None), "student", None) is not None
    finally:
        outcome.window = None
    if not written:
        problem = f"The demo could not score the sweep: {outcome.message}"
        if outcome.screenshot is not None:
            # the folder holds this run's files only: an earlier run's scores beside a picture of
            # nothing scored passed for this run's
            from fetaliqa_core.export import earlier_results, other_sweep, remove_earlier_outputs

            other = other_sweep(earlier_results(out_dir)[0], sweep_path)
            if done[0]:
                # (it said "with nothing scored" beside the student's 257 of 840 frames on the curve)
                problem += (f". {outcome.screenshot} shows the window with {done[0]} of {done[1]} frames scored and no "
                            "answer yet" + (" (a cascade answers once its student has scored every frame)"
                                            if cascade else ""))
            else:
                problem += f". {outcome.screenshot} shows the window with nothing scored"
            if other is not None:
                # another sweep's results (a `score --out` into this folder): never removed here
                problem += (f"; the folder also holds the results of {Path(other).name}, another run's, left as "
                            "they were")
            else:
                removed = remove_earlier_outputs(out_dir)
                if removed:
                    names = " and ".join([", ".join(removed[:-1]), removed[-1]] if len(removed) > 1 else removed)
                    problem += f"; the earlier run's {names} there {'were' if len(removed) > 1 else 'was'} removed"
        # stopped while the models were still loading: the process ends here, after this one line
        end_without_loading_models(1, f"fetaliqa: {shown(problem)}")
        raise FetalIQAError(problem)
    if outcome.screenshot is not None:
        written.append(outcome.screenshot)
    print(f"answer: {answer}")
    print(f"demo output: {out_dir}")
    for p in written:
        print(f"  {p.name}")
    code = 0
    if not outcome.complete:
        print(f"fetaliqa: scoring did not complete ({outcome.message}); the files hold what was scored",
              file=sys.stderr)
        code = 1
    end_without_loading_models(code)
    return code
