"""The post-call survey's answers from the dialplan (`UserEvent: CtiSurvey`, see
asterisk-config/extensions.conf [cti-survey]) to the database.

The engine hands every CtiSurvey UserEvent to `SurveyRecorder.offer`: it is parsed here (a score
outside 1–5, a missing Linkedid or a non-numeric question is logged and dropped, never raised into
the AMI loop), published as `SurveyAnswered` on the bus, and stored by the bus subscriber with the
database retry every critical subscriber uses, so a dropped connection loses no answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.survey import service as surveys
from cti.ami.protocol import AmiMessage
from cti.calls.events import DomainEvent
from cti.retry import with_db_retry

log = logging.getLogger(__name__)
USER_EVENT = "CtiSurvey"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SurveyAnswered(DomainEvent):
    linkedid: str
    score: int
    question: int
    queue: str | None
    dnis: str | None


def parse(msg: AmiMessage, now: float) -> SurveyAnswered | None:
    """The answer in a CtiSurvey UserEvent, or None (logged) when it is not a usable one."""
    linkedid = (msg.get("Linkedid") or "").strip()
    score, question = (msg.get("Score") or "").strip(), (msg.get("Question") or "1").strip()
    if not linkedid or not score.isdigit() or not question.isdigit() or int(score) not in surveys.SCORES:
        log.warning("unusable survey answer skipped: Linkedid=%r Score=%r Question=%r", linkedid, score, question)
        return None
    return SurveyAnswered(
        at=now,
        linkedid=linkedid,
        score=int(score),
        question=max(int(question), 1),
        queue=msg.get("Queue") or None,
        dnis=msg.get("DNIS") or None,
    )


class SurveyRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pbx: str) -> None:
        self.sessions = sessions
        self.pbx = pbx
        self.stored = 0

    async def __call__(self, event: SurveyAnswered) -> None:
        answered_at = dt.datetime.fromtimestamp(event.at, dt.UTC)

        async def store() -> bool:
            async with transaction(self.sessions) as session:
                return await surveys.record(
                    session,
                    pbx=self.pbx,
                    linkedid=event.linkedid,
                    score=event.score,
                    question=event.question,
                    queue=event.queue,
                    dnis=event.dnis,
                    answered_at=answered_at,
                )

        if await with_db_retry(store, what=f"storing the survey answer of {event.linkedid}"):
            self.stored += 1
