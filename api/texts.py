"""User-facing Chinese text, kept in one place."""

from __future__ import annotations

LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}

DIMENSIONS = {
    "standard": "规范",
    "civility": "文明",
    "fairness": "公正",
    "integrity": "廉洁",
    "efficiency": "效率",
}

QUESTIONS = {
    "showed_id": "出示执法证件了吗",
    "informed_rights": "告知权利义务了吗",
    "two_officers": "现场执法人员不少于两人吗",
    "bodycam": "使用执法记录仪了吗",
}

STATUS = {
    "received": "已受理，待签收",
    "acknowledged": "办理中",
    "replied": "已答复，待您评价",
    "waiting": "待您补充材料",
    "rechecking": "复核中",
    "closed": "已办结",
}

STAFF_STATUS = {
    "received": "待签收",
    "acknowledged": "办理中",
    "waiting": "待群众补充材料",
    "replied": "已答复，待群众评价",
    "rechecking": "复核中",
    "closed": "已办结",
}

CLOCKS = {
    "acknowledge": "签收",
    "first_contact": "首次联系",
    "reply": "核查答复",
    "reply_urgent": "紧急处置",
    "recheck": "复核",
    "bad_rating_followup": "差评回访核实",
    "bad_rating_rectify": "差评整改反馈",
    "feedback_window": "评价期",
    "revisit": "回访",
}

KINDS = {"complaint": "投诉举报", "bad_rating": "差评回访核实"}

UNIT_LEVELS = {"province": "省厅", "city": "支队", "county": "大队"}

EVENTS = {
    "received": "您的投诉已受理，案件编号 {ticket}，由{unit}办理。",
    "bad_rating_received": "您的差评已收到，{unit}将回访核实（案件编号 {ticket}）。",
    "acknowledged": "{unit}已签收，正在核查处理。",
    "contacted": "办理人员已与您联系。",
    "replied": "{unit}已答复：{message}",
    "feedback_satisfied": "您对处理结果表示满意，案件办结。",
    "feedback_unsatisfied": "您对处理结果不满意，已转{unit}复核。理由：{reason}",
    "recheck_replied": "{unit}复核答复：{message}",
    "closed": "案件已办结。",
    "info_requested": "{unit}请您补充材料：{message}（补充前办理时限暂停计算）",
    "info_supplied": "您已补充材料：{message}（办理时限恢复计算）",
    "note": "内部备注：{text}",
    "identity_viewed": "查看了举报人联系方式",
    "transferred": "案件已转交{unit}办理。",
    "escalated": "案件已上报{unit}办理。",
    "extension_requested": "申请延期{days}个工作日，原因：{reason}",
    "extension_approved": "经{unit}批准，办理期限延长至{due}。原因：{reason}",
    "extension_refused": "延期申请未获批准：{note}",
    "closed_by_staff": "评价期已过，案件办结。",
    "closed_unrated": "评价期已过，案件按“未评价”办结。",
    "sla_warning": "{clock}时限已过{percent}%，已提醒办理人员。",
    "sla_overdue": "{clock}已超时，已通知{unit}负责人及上级单位。",
    "province_supervise": "{clock}超时一个工作日仍未办结，已报省厅督办。",
    "criticism": "{clock}超时，已列入通报。",
    # content security (api/services/moderation.py, api/services/content_review.py)
    "content_held": "{field}未通过自动审核，待人工审核。",
    "content_released": "{field}经人工审核放行。",
    "content_rejected": "{field}经人工审核未予放行：{note}",
    "info_supplied_held": "您已补充材料，内容正在审核（办理时限恢复计算）",
    "info_supplied_released": "您补充的材料已审核：{message}",
    "made_anonymous": "您已改为匿名举报，办理人员看不到您的身份和联系方式。",
}
