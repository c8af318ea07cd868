"""agent_panel"""
