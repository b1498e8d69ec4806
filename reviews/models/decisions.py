"""Review decisions and comments on proposals.

A Decision is one reviewer's verdict on one proposal revision; an edit creates a new
revision (a new Proposal row), so earlier approvals never carry over to edited text.
"""

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Cast

from agents.models import AuditEvent
from dreams.models import Proposal

__all__ = ["Decision", "ReviewComment"]


def _halted_since() -> Exists:
    """Whether the decision's proposal had its rollout halted at or after the decision."""
    return Exists(
        AuditEvent.objects.filter(
            target_type="proposal",
            target_id=Cast(OuterRef("proposal_id"), models.CharField()),
            action="proposal.halt",
            created_at__gte=OuterRef("created_at"),
        )
    )


class DecisionQuerySet(models.QuerySet["Decision"]):
    def current_approvals(self) -> "DecisionQuerySet":
        """The approvals that count now: after a halted rollout only the ones given since the
        halt (restarting the rollout needs new approvals). Every count shown uses this."""
        return self.filter(kind=Decision.Kind.APPROVE).filter(~_halted_since())

    def with_current(self) -> "DecisionQuerySet":
        """Each decision annotated `is_current_approval` (the rule above), for pages that list
        all decisions and count the current approvals among them."""
        return self.annotate(
            is_current_approval=models.ExpressionWrapper(
                Q(kind=Decision.Kind.APPROVE) & ~_halted_since(),
                output_field=models.BooleanField(),
            )
        )


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

    objects = DecisionQuerySet.as_manager()

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
    """A comment on a proposal: free, or anchored on a line or hunk of its diff.

    An anchored comment opens a thread (replies point at it with `reply_to`); the thread is
    resolved as a whole, like a review thread on a pull request."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_comments"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    document = models.CharField(
        max_length=300, blank=True, help_text="diff document the comment is on ('' = none)"
    )
    line = models.CharField(
        max_length=12, blank=True, help_text="R<new line>, L<old line> or H<hunk> in the document"
    )
    quote = models.TextField(blank=True, help_text="the line's text when the comment was made")
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    thread_replies: list["ReviewComment"]  # set on thread roots by reviews.selectors

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment on #{self.proposal_id}"

    @property
    def anchored(self) -> bool:
        return bool(self.document and self.line)
