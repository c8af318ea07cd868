"""Import every context's models so Base.metadata is complete (Alembic and tests use it)."""

from crm_core import calendar_store, notifications
from crm_core.callbacks import models as callbacks_models
from crm_core.calllog import models as calllog_models
from crm_core.calllog import qa_models, recording_models
from crm_core.comms import models as comms_models
from crm_core.db import Base
from crm_core.kb import models as kb_models
from crm_core.loyalty import adjustments as loyalty_adjustments
from crm_core.loyalty import models as loyalty_models
from crm_core.members import models as members_models
from crm_core.messaging import models as messaging_models
from crm_core.security import models as security_models
from crm_core.service import models as service_models
from crm_core.service import sla_models
from crm_core.survey import models as survey_models

__all__ = [
    "Base",
    "calendar_store",
    "callbacks_models",
    "calllog_models",
    "comms_models",
    "kb_models",
    "loyalty_adjustments",
    "loyalty_models",
    "members_models",
    "messaging_models",
    "notifications",
    "qa_models",
    "recording_models",
    "security_models",
    "service_models",
    "sla_models",
    "survey_models",
]
