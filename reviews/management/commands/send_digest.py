"""Send the daily digest e-mail now (the beat schedule runs it daily)."""

from typing import Any

from django.core.management.base import BaseCommand

from reviews import digest


class Command(BaseCommand):
    help = "E-mail each workspace's reviewers a digest of corrected failures and pending reviews."

    def handle(self, *args: Any, **options: Any) -> None:
        sent = digest.send_daily_digest()
        self.stdout.write(f"Sent {sent} digest e-mail(s).")
