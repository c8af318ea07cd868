"""crm_core/members"""
