from django.urls import path

from agents.otel import views

urlpatterns = [path("v1/traces", views.traces, name="otel-traces")]
