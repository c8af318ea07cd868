"""crm_core/comms"""
