"""What users read about an adapter's metrics: the evaluation's summary, with any fallback named."""

from bot.render import Style, metric_lines, subjects_view, training_done
from bot.services.types import SubjectInfo, SubjectsView

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
