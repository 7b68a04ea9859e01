"""What /train tells the user after the verdicts: the subject, the job, or what is still missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.services.types import PhotoVerdict, SubjectRef, TrainOutcome
from bot.services.verbs import slash
from storage.settings import Settings
from storage.subjects import Subject

RECOMMENDED_PHOTOS = (5, 20)


@dataclass(frozen=True)
class SubjectPlan:
    """Decided before intake: which subject the photos go to (None: a new one) and under which trigger."""

    subject: Subject | None
    trigger: str
    class_noun: str
    display_name: str
    group: str | None
    suggested: bool
    photos_before: int = 0
    known_phashes: tuple[str, ...] = ()
    noun_requested: str | None = None
    extending: bool = False  # the photos go to an existing subject of the requester
    retrain: bool = False  # an existing subject named with no photos: retrain from the stored ones
    added: int | None = None  # new photos accepted (known once they are stored)


def subject_ref(subject: Subject) -> SubjectRef:
    return SubjectRef(subject.id, subject.trigger, subject.class_noun, subject.display_name)


def _notes(settings: Settings, plan: SubjectPlan, job_id: int | None, total: int, stored: bool) -> list[str]:
    trigger, minimum = plan.trigger, settings.min_photos_per_subject
    notes = []
    if plan.noun_requested and plan.noun_requested != plan.class_noun:
        notes.append(f"`{trigger}` keeps its class noun `{plan.class_noun}`.")
    if not stored:
        notes.append("None of the photos could be used, so nothing was saved; fix the problems above and try again.")
        return notes
    if plan.group is not None:
        notes.append(
            f"`{trigger}` is in the family group `{plan.group}`; when everyone is added, train them together "
            "with /train-family."
        )
    elif total < minimum:
        missing = minimum - total
        notes.append(
            f"`{trigger}` has {total} usable photo{'s' if total != 1 else ''}; training needs at least {minimum}, "
            f"so add {missing} more with {slash('photos add')}, then run `{slash('retrain', subject=trigger)}`."
        )
    elif job_id is None and plan.added == 0 and plan.extending:
        notes.append(
            f"None of the new photos could be used, so no training was queued; `{trigger}` keeps its {total} "
            f"photos. Run `{slash('retrain', subject=trigger)}` to retrain from them anyway."
        )
    elif job_id is None:
        notes.append(
            f"Your photos are saved, but another training job of yours started meanwhile; run "
            f"`{slash('retrain', subject=trigger)}` when it has finished."
        )
    if stored and total < RECOMMENDED_PHOTOS[0]:
        low, high = RECOMMENDED_PHOTOS
        notes.append(f"{low} to {high} photos give a much better likeness; you can add more with /photos add.")
    return notes


def train_outcome(
    settings: Settings, plan: SubjectPlan, job_id: int | None, verdicts: Sequence[PhotoVerdict], total: int,
    position: int | None,
) -> TrainOutcome:
    """`subjects` is empty when nothing was stored (a new subject none of whose photos could be used)."""
    stored = plan.subject is not None
    needs_more = max(0, settings.min_photos_per_subject - total) if plan.group is None else 0
    return TrainOutcome(
        subjects=(subject_ref(plan.subject),) if stored else (), verdicts=tuple(verdicts),
        created=stored and not plan.extending, trigger_suggested=plan.suggested and stored, photos_total=total,
        needs_more=needs_more, job_id=job_id, queue_position=position, group=plan.group if stored else None,
        notes=tuple(_notes(settings, plan, job_id, total, stored)),
    )


def family_outcome(
    group: str, members: Sequence[Subject], total: int, job_id: int, position: int | None
) -> TrainOutcome:
    triggers = ", ".join(f"`{subject.trigger}`" for subject in members)
    return TrainOutcome(
        subjects=tuple(subject_ref(subject) for subject in members), photos_total=total, job_id=job_id,
        queue_position=position, group=group,
        notes=(f"One adapter for the family `{group}` is queued: {triggers}, each with its own trigger.",),
    )
