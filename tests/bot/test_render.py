"""What users read about an adapter's metrics: the evaluation's summary, with any fallback named."""

from bot.render import Style, cancel_outcome, job_progress, metric_lines, progress_line, subjects_view, training_done
from bot.services.types import CancelOutcome, SubjectInfo, SubjectsView

FALLBACK = {
    "drift": 0.0008, "subject_fidelity": 0.04, "subject_fidelity_base": 0.04,
    "fidelity_method": "fallback: pixel similarity (SSIM) of face regions (no face-identity model installed)",
    "label": "likeness 0.04 (base model 0.04), drift 0.001; likeness is a fallback pixel measure "
             "(no face-identity model installed)",
}


def test_training_done_shows_the_summary_and_names_the_fallback():
    text = training_done(["rraj"], ["person"], {"version": 2, "steps": 500, "final_loss": 0.1, "metrics": FALLBACK})
    assert "adapter v2" in text and "500 steps" in text
    assert "likeness 0.04" in text and "fallback" in text
    assert text.count("drift") == 1  # one summary line, not every raw key


def test_subjects_view_shows_each_adapters_summary_once():
    info = SubjectInfo(subject_id=1, trigger="rraj", class_noun="person", display_name="Raj", family="tiny-sd15",
                       mine=True, state="ready", photos=5, adapter_id=3, adapter_version=1, metrics=FALLBACK,
                       label=FALLBACK["label"])
    text = subjects_view(SubjectsView(mine=(info,), shared=()), Style.PLAIN)
    assert text.count("likeness 0.04") == 1 and "fallback" in text


def test_a_failed_evaluation_says_so_and_raw_figures_show_without_a_summary():
    assert metric_lines({"error": "The adapter was saved, but measuring it failed."}) == [
        "The adapter was saved, but measuring it failed."]
    assert metric_lines({"drift": 0.25}) == ["drift: 0.25"]
    assert metric_lines({}) == []


# Progress lines and the ETA.
def test_every_running_progress_line_has_an_eta():
    now = 1_000_000.0
    given = progress_line(3, "train", "running", 21, 30, "Training step 21/30", eta_at=now + 40, now=now)
    assert given.startswith("job #3 training: running") and given.endswith("ETA in 40 s")
    paced = progress_line(3, "train", "running", 10, 30, "", started_at=now - 100, now=now)
    assert paced.endswith("ETA in 3 min")  # 10 steps in 100 s, 20 to go: 200 s
    unknown = progress_line(3, "train", "running", 0, 6, "Measuring likeness 0/6", now=now)
    assert "Measuring likeness 0/6" in unknown and unknown.endswith("ETA: estimating")
    assert "ETA" not in progress_line(3, "generate", "queued", 0, 0, "", now=now)


def test_the_discord_progress_message_always_says_when_it_is_done():
    shown = job_progress(job_id=4, kind="train", state="running", step=2, total=6, message="Measuring likeness 2/6",
                         eta_at=None, position=0, label="rraj")
    assert "ETA: estimating" in shown and "Measuring likeness 2/6" in shown
    timed = job_progress(job_id=4, kind="train", state="running", step=2, total=6, message="", eta_at=2e9,
                         position=0, label="rraj")
    assert "Done <t:2000000000:R>" in timed


def test_cancel_says_whether_a_waiting_job_had_run_steps():
    assert cancel_outcome(CancelOutcome(3, "train", "cancelled")) == "Cancelled job #3; it had not started."
    resumed = cancel_outcome(CancelOutcome(3, "train", "cancelled", steps_done=4))
    assert "had done 4 step(s)" in resumed and "not started" not in resumed
    assert "Stopping job #3" in cancel_outcome(CancelOutcome(3, "train", "requested", steps_done=4))
