"""``ecomstream demo``: orchestration, live status and the dashboard of gold."""
