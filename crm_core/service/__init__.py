"""Service desk: requests (服务请求), work orders (服务工单), return visits (服务回访) and their SLA clocks."""
