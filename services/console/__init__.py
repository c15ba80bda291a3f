"""The console: the web pages a community manager runs roac from (services/console/app.py)."""
