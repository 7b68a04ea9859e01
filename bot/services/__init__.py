"""Use cases shared by the Discord front end and the console. Plain dataclasses in and out; never imports discord
(or torch). Expected failures raise ServiceError, whose message is one sentence to show as-is."""

from bot.services.container import Services
from bot.services.errors import ServiceError
from bot.services.types import (
    AdminLimits, CancelOutcome, DeletedGeneration, ExportBundle, ForgetOutcome, ImagineOptions, JobView, PhotoInfo, PhotoVerdict,
    QueuedGeneration, Requester, ShareOutcome, StyleInfo, SubjectInfo, SubjectRef, SubjectsView, TrainOutcome,
    TriggerChoice, Upload,
)

__all__ = [
    "AdminLimits", "CancelOutcome", "DeletedGeneration", "ExportBundle", "ForgetOutcome", "ImagineOptions", "JobView",
    "PhotoInfo", "PhotoVerdict", "QueuedGeneration", "Requester", "ServiceError", "Services", "ShareOutcome",
    "StyleInfo", "SubjectInfo", "SubjectRef", "SubjectsView", "TrainOutcome", "TriggerChoice", "Upload",
]
