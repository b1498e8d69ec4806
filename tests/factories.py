"""factory-boy factories for the whole suite."""

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.models import Agent, ConfigVersion, Feedback, Membership, Run, Workspace


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"ws-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)
    role = Membership.Role.REVIEWER


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    workspace = factory.SubFactory(WorkspaceFactory)
    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.Sequence(lambda n: f"Agent {n}")
    model = "claude-sonnet-5-5"


class ConfigVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConfigVersion

    agent = factory.SubFactory(AgentFactory)
    number = factory.Sequence(lambda n: n + 1)
    system_prompt = "You are a helpful support agent."
    memory_documents = factory.LazyFunction(dict)
    tools = factory.LazyFunction(list)
    model = "claude-sonnet-5-5"


def simple_messages(
    question: str = "Where is my order?", answer: str = "It ships tomorrow."
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    agent = factory.SubFactory(AgentFactory)
    external_id = factory.Sequence(lambda n: f"run-{n}")
    status = Run.Status.SUCCESS
    messages = factory.LazyFunction(simple_messages)
    step_count = 1
    started_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=1))


class FeedbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feedback

    run = factory.SubFactory(RunFactory)
    rating = Feedback.Rating.NEGATIVE
    comment = "Wrong answer."
