"""crm_core/security"""
