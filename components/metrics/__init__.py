"""A run's figures as files hold them: ultralytics' results.csv and the JSON a run writes."""
