"""Message templates and delivery (短信模板 / 邮件模板, seeds 001 and 003): SMS and e-mail to members."""
