"""crm_core/importers"""
