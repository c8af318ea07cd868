"""Domain values that the templates translate at run time, listed here so that extraction sees them.

Templates show stored codes through gettext, e.g. `{{ _(p.status) }}` or `{{ _(c.outcome) }}`. pybabel
can only extract string literals, so a value that arrives from the database, the settings or the CTI
engine would never reach messages.pot and would stay in English in the Chinese UI. Every such value is
marked here with `N_` (a no-op marker; `agent_panel/babel.cfg` extracts it), so `scripts/i18n extract`
puts it in the catalogue and `scripts/i18n check` fails until it has a Chinese translation.

When a new value appears in one of the sources below (an enum member, a Literal, a settings default),
add it here, run `scripts/i18n extract` and translate it in translations/zh_CN/LC_MESSAGES/messages.po.
One msgid serves every context that uses the same code (e.g. "no_answer" is a call outcome, a callback
source and a callback outcome), so its translation must fit all of them.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a string for extraction without translating it (translation happens in the template)."""
    return message


VALUES: tuple[str, ...] = (
    # crm_core/members/validation.py MemberType: card tiers (普通 → 金卡 → 钻石卡)
    N_("standard"),
    N_("gold"),
    N_("diamond"),
    # crm_core/members/validation.py MemberStatus: join workflow, 停用 and 注销
    N_("applied"),
    N_("reviewing"),
    N_("approved"),
    N_("active"),
    N_("rejected"),
    N_("suspended"),
    N_("closed"),
    # crm_core/members/validation.py CustomerType
    N_("personal"),
    N_("enterprise"),
    N_("government"),
    # crm_core/members/validation.py IdType
    N_("resident_id"),
    N_("passport"),
    N_("hk_macau_permit"),
    N_("taiwan_permit"),
    N_("other"),
    # crm_core/members/schemas.py: member source
    N_("phone"),
    N_("web"),
    N_("store"),
    N_("import"),
    # crm_core/members/schemas.py ContactKind (contact_person is also a lookup match kind)
    N_("mobile"),
    N_("home"),
    N_("work"),
    N_("contact_person"),
    # crm_core/members/schemas.py AddressIn.kind (home, work above)
    N_("delivery"),
    # crm_core/members/schemas.py gender
    N_("male"),
    N_("female"),
    # crm_core/comms/schemas.py CommunicationIn: direction (呼入/呼出)
    N_("in"),
    N_("out"),
    # category (咨询/投诉/建议/回访; other above)
    N_("enquiry"),
    N_("complaint"),
    N_("suggestion"),
    N_("return_visit"),
    # urgency (普通/重要/紧急)
    N_("normal"),
    N_("important"),
    N_("urgent"),
    # status (待处理/处理中/已完成)
    N_("pending"),
    N_("in_progress"),
    N_("done"),
    # crm_core/calllog: call direction
    N_("inbound"),
    N_("outbound"),
    N_("internal"),
    # crm_core/calllog: call outcome
    N_("answered"),
    N_("abandoned"),
    N_("no_answer"),
    N_("busy"),
    N_("failed"),
    N_("lost"),
    # crm_core/callbacks: source (abandoned, no_answer above)
    N_("after_hours"),
    N_("queue_timeout"),
    # crm_core/callbacks: status (closed above)
    N_("open"),
    N_("claimed"),
    # crm_core/callbacks: attempt outcome (no_answer, busy above)
    N_("reached"),
    N_("wrong_number"),
    # crm_core/members/lookup.py MatchKind names, lowercased (contact_person above)
    N_("own_mobile"),
    N_("own_landline"),
    N_("company"),
    # crm_core/security/policy.py Role
    N_("agent"),
    N_("supervisor"),
    N_("crm_staff"),
    N_("admin"),
    # crm_core/settings.py Settings.pause_reasons defaults
    N_("break"),
    N_("lunch"),
    N_("training"),
    N_("meeting"),
    N_("after-call-work"),
    N_("wrap-up"),
    # crm_core/settings.py Settings.dispositions defaults (wrong_number, complaint above)
    N_("resolved"),
    N_("follow_up"),
    N_("transferred"),
    N_("sale"),
    # crm_core/settings.py Settings.queues defaults
    N_("member-service"),
    N_("vip"),
    # crm_core/service/models.py: request types, priorities, states, history kinds, work-order and visit states
    N_("repair"),
    N_("return_visit"),
    N_("low"),
    N_("high"),
    N_("urgent"),
    N_("new"),
    N_("assigned"),
    N_("waiting_customer"),
    N_("merged"),
    N_("registered"),
    N_("dispatched"),
    N_("scheduled"),
    N_("created"),
    N_("state"),
    N_("responded"),
    N_("comment"),
    N_("priority"),
    N_("escalated"),
    N_("onsite"),
    N_("return_repair"),
    # crm_core/kb/models.py VersionState: article versions (起草 → 已审核)
    N_("draft"),
    N_("in_review"),
    N_("approved"),
    N_("rejected"),
    N_("superseded"),
    N_("archived"),
    # crm_core/messaging/models.py: channels, kinds and message states
    N_("sms"),
    N_("email"),
    N_("service"),
    N_("marketing"),
    N_("queued"),
    N_("sending"),
    N_("sent"),
    N_("skipped"),
    N_("delivered"),
    N_("undelivered"),
    # crm_core/loyalty/adjustments.py: manual adjustment kinds
    N_("grant"),
    N_("deduct"),
    # crm_core/loyalty/models.py RuleKind: earning rule kinds
    N_("rate"),
    N_("category"),
    N_("tier"),
    N_("campaign"),
    N_("event"),
)
