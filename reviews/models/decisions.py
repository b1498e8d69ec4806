"""Review decisions and comments on proposals.

A Decision is one reviewer's verdict on one proposal revision; an edit creates a new
revision (a new Proposal row), so earlier approvals never carry over to edited text.
"""

from django.conf import settings
from django.db import models

from dreams.models import Proposal

__all__ = ["Decision", "ReviewComment"]


class Decision(models.Model):
    class Kind(models.TextChoices):
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"
        REQUEST_CHANGES = "request_changes", "Requested changes"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    comment = models.TextField(blank=True)
    lock_version = models.PositiveIntegerField(help_text="proposal lock_version decided on")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One approval per reviewer per revision: the database holds the two-person rule.
            models.UniqueConstraint(
                fields=["proposal", "reviewer"],
                condition=models.Q(kind="approve"),
                name="decision_one_approval_per_reviewer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.proposal_id} by {self.reviewer_id}"


class ReviewComment(models.Model):
    """A free comment on a proposal, outside any decision."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_comments"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment on #{self.proposal_id}"
