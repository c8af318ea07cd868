"""The CRM domain: members, security, communication records, import/export. Imports no other top-level package."""
