"""Post-call satisfaction survey (电话服务评价, seed 003): the IVR's 1–5 scores per call, agent, member."""
