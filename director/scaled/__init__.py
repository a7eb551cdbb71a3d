"""The scaled profile on one machine (`make run-scaled`): a supervisor that starts two web
processes, the one hero relay process, a Celery worker and beat, and a small reverse proxy in
front of them (docs/deploy.md)."""
